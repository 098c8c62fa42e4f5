// The code a new script starts with, per language.

export const TEMPLATES: Record<string, string> = {
  python3: `def main(name: str = "world", times: int = 1):
    for _ in range(times):
        print(f"hello {name}")
    return {"greeting": f"hello {name}", "times": times}
`,
  bun: `export async function main(name: string = "world", times: number = 1) {
  for (let i = 0; i < times; i++) console.log(\`hello \${name}\`);
  return { greeting: \`hello \${name}\`, times };
}
`,
  deno: `export async function main(name: string = "world", times: number = 1) {
  for (let i = 0; i < times; i++) console.log(\`hello \${name}\`);
  return { greeting: \`hello \${name}\`, times };
}
`,
  nativets: `export async function main(name: string = "world") {
  return { greeting: \`hello \${name}\` };
}
`,
  go: `package inner

import "fmt"

func main(name string, times int) (interface{}, error) {
	for i := 0; i < times; i++ {
		fmt.Println("hello", name)
	}
	return map[string]interface{}{"greeting": "hello " + name, "times": times}, nil
}
`,
  bash: `name="\${1:-world}"
echo "hello $name"
`,
  postgresql: `-- $1 name = world
SELECT 'hello ' || $1::text AS greeting;
`,
};
