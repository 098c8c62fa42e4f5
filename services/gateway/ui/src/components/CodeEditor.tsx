import { go } from "@codemirror/lang-go";
import { javascript } from "@codemirror/lang-javascript";
import { python } from "@codemirror/lang-python";
import { PostgreSQL, sql } from "@codemirror/lang-sql";
import { yaml } from "@codemirror/lang-yaml";
import { StreamLanguage } from "@codemirror/language";
import { shell } from "@codemirror/legacy-modes/mode/shell";
import type { Extension } from "@codemirror/state";
import CodeMirror from "@uiw/react-codemirror";
import { useMemo } from "react";

/** Script languages Gristmill runs, and the editor mode of each. */
export const LANGUAGES: { id: string; label: string }[] = [
  { id: "python3", label: "Python" },
  { id: "bun", label: "TypeScript (Bun)" },
  { id: "deno", label: "TypeScript (Deno)" },
  { id: "nativets", label: "TypeScript (native)" },
  { id: "go", label: "Go" },
  { id: "bash", label: "Bash" },
  { id: "postgresql", label: "PostgreSQL" },
];

function extensionsFor(language: string): Extension[] {
  switch (language) {
    case "python3":
      return [python()];
    case "bun":
    case "deno":
    case "nativets":
    case "typescript":
      return [javascript({ typescript: true })];
    case "javascript":
      return [javascript()];
    case "go":
      return [go()];
    case "bash":
      return [StreamLanguage.define(shell)];
    case "postgresql":
      return [sql({ dialect: PostgreSQL })];
    case "yaml":
      return [yaml()];
    case "json":
      return [javascript()];
    default:
      return [];
  }
}

export interface CodeEditorProps {
  value: string;
  onChange?: (value: string) => void;
  language: string;
  readOnly?: boolean;
  height?: string;
}

export function CodeEditor({ value, onChange, language, readOnly, height = "420px" }: CodeEditorProps) {
  const extensions = useMemo(() => extensionsFor(language), [language]);
  return (
    <div className="code-editor" data-language={language}>
      <CodeMirror
        value={value}
        height={height}
        extensions={extensions}
        editable={!readOnly}
        readOnly={readOnly}
        onChange={onChange}
        basicSetup={{ tabSize: 4 }}
      />
    </div>
  );
}
