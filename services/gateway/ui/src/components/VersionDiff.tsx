import { diffLines } from "diff";
import { apiJson, ws } from "../lib/api";
import type { Script } from "../lib/types";
import { useAsync } from "../lib/useAsync";
import { ErrorBox, Loading } from "./common";

/** The lines changed from version ``before`` (a hash) to ``after``'s code. */
export function VersionDiff({ before, after }: { before: string; after: string }) {
  const previous = useAsync(() => apiJson<Script>(ws(`/scripts/get/h/${before}`)), [before]);
  if (previous.loading && !previous.data) return <Loading what="Loading the version" />;
  if (previous.error) return <ErrorBox error={previous.error} />;
  const parts = diffLines(previous.data!.content, after);
  return (
    <pre className="diff" data-from={before}>
      {parts.map((part, i) => {
        const sign = part.added ? "+" : part.removed ? "-" : " ";
        const kind = part.added ? "added" : part.removed ? "removed" : "same";
        const lines = part.value.replace(/\n$/, "").split("\n");
        return (
          <span key={i} className={`diff-${kind}`}>
            {lines.map((line) => `${sign} ${line}\n`).join("")}
          </span>
        );
      })}
    </pre>
  );
}
