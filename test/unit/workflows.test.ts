/**
 * The GitHub Actions workflows (.github/workflows/): actionlint (pinned,
 * test/support/actionlint.ts) reports nothing on any of them, with
 * shellcheck checking every `run:` script; and the properties the release
 * and deploy pipelines promise (issue 13), read from the workflows as
 * PyYAML parses them: actions pinned to commits, least privilege, one run
 * at a time, the channel moved last, only the approved plan applied, and
 * README.md naming exactly the secrets and variables the workflows read.
 */
// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these strings are GitHub Actions expressions, where ${{ ... }} is the syntax under test
import { execFile, spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { ACTIONLINT_VERSION, ensureActionlint } from "../support/actionlint.ts";
import { REPO } from "../support/agent-process.ts";
import { parseYaml } from "../support/python-tools.ts";

const WORKFLOWS = join(REPO, ".github", "workflows");

// biome-ignore lint/suspicious/noExplicitAny: workflow YAML, untyped
type Any = any;

interface Finding {
  readonly message: string;
  readonly filepath: string;
  readonly line: number;
  readonly column: number;
  readonly kind: string;
}

/** Runs actionlint from the repository root on `files` (or on stdin with "-"); resolves with its findings (exit 1 means findings, not failure). */
async function actionlint(args: string[], input?: string): Promise<Finding[]> {
  const bin = await ensureActionlint();
  const child = execFile(bin, ["-format", "{{json .}}", "-no-color", ...args], { cwd: REPO, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 });
  const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin?.end(input ?? "");
  });
  if (out.code !== 0 && out.code !== 1) throw new Error(`actionlint failed (exit ${out.code}): ${out.stderr}${out.stdout}`);
  const text = out.stdout.trim();
  return text === "" || text === "null" ? [] : (JSON.parse(text) as Finding[]);
}

function workflowFiles(): string[] {
  return readdirSync(WORKFLOWS)
    .filter((f) => f.endsWith(".yml") || f.endsWith(".yaml"))
    .sort();
}

const hasShellcheck = spawnSync("shellcheck", ["--version"]).status === 0;

describe(`actionlint ${ACTIONLINT_VERSION}`, () => {
  it("there are the release and deploy workflows, and shellcheck is on PATH for actionlint to check their run: scripts", () => {
    expect(workflowFiles()).toEqual(["deploy.yml", "release.yml"]);
    expect(hasShellcheck, "shellcheck is not on PATH: install it (apt-get install shellcheck; .ci/run does) so actionlint checks the run: scripts").toBe(true);
  });

  it("reports nothing on .github/workflows/*.yml", { timeout: 900_000 }, async () => {
    const findings = await actionlint(workflowFiles().map((f) => join(".github", "workflows", f)));
    expect(findings.map((f) => `${f.filepath}:${f.line}:${f.column} [${f.kind}] ${f.message}`)).toEqual([]);
  });

  it("reports nothing with each pinned commit read as its major version tag, whose inputs actionlint knows (for a commit it checks none)", { timeout: 900_000 }, async () => {
    for (const f of workflowFiles()) {
      const path = join(".github", "workflows", f);
      const tagged = readFileSync(join(REPO, path), "utf8").replace(/@[0-9a-f]{40} # v(\d+)\.\d+\.\d+$/gm, "@v$1");
      expect(tagged, f).not.toMatch(/@[0-9a-f]{40}/);
      const findings = await actionlint(["-stdin-filename", path, "-"], tagged);
      expect(findings.map((x) => `${x.filepath}:${x.line}:${x.column} [${x.kind}] ${x.message}`)).toEqual([]);
    }
  });

  it("does find what it should: an unquoted variable (shellcheck), an untrusted expression in a script, a misspelt action input", { timeout: 900_000 }, async () => {
    const bad = [
      "on: push",
      "permissions: {}",
      "jobs:",
      "  a:",
      "    runs-on: ubuntu-24.04",
      "    steps:",
      "      - uses: actions/checkout@v4",
      "        with:",
      "          persist-credential: false",
      "      - run: echo $FOO ${{ github.event.head_commit.message }}",
      "",
    ].join("\n");
    const kinds = (await actionlint(["-"], bad)).map((f) => f.kind).sort();
    expect(kinds).toEqual(expect.arrayContaining(["action", "expression", "shellcheck"]));
  });
});

describe("what the pipelines promise", () => {
  const wf: Record<string, Any> = {};
  const text: Record<string, string> = {};
  beforeAll(async () => {
    for (const f of workflowFiles()) {
      text[f] = readFileSync(join(WORKFLOWS, f), "utf8");
      wf[f] = await parseYaml(text[f]!);
    }
  }, 900_000);

  /** Every step of every job, with its job's name. */
  const steps = (f: string): { job: string; step: Any }[] =>
    Object.entries(wf[f].jobs as Record<string, Any>).flatMap(([job, j]) => (j.steps as Any[]).map((step) => ({ job, step })));
  const runOf = (f: string, job: string, name: RegExp): string => {
    const s = steps(f).find((x) => x.job === job && name.test(String(x.step.name ?? "")));
    if (!s) throw new Error(`${f}: job ${job} has no step named like ${name}`);
    return String(s.step.run);
  };
  const indexOf = (f: string, job: string, pred: (step: Any) => boolean) => (wf[f].jobs[job].steps as Any[]).findIndex(pred);

  it("every action is pinned to a full commit (local actions aside), with its version in a comment", () => {
    for (const f of workflowFiles()) {
      for (const { job, step } of steps(f)) {
        if (step.uses === undefined || String(step.uses).startsWith("./")) continue;
        expect(String(step.uses), `${f} ${job}`).toMatch(/^[\w.-]+\/[\w.-]+@[0-9a-f]{40}$/);
      }
      for (const line of text[f]!.split("\n").filter((l) => /uses: [^.]/.test(l))) expect(line, f).toMatch(/@[0-9a-f]{40} # v\d+\.\d+\.\d+$/);
    }
  });

  it("least privilege: nothing at the top, and no job may write anything (contents: read at most)", () => {
    for (const f of workflowFiles()) {
      expect(wf[f].permissions, f).toEqual({});
      for (const [job, j] of Object.entries(wf[f].jobs as Record<string, Any>)) expect(j.permissions, `${f} ${job}`).toEqual({ contents: "read" });
    }
  });

  it("one run at a time, never cancelled: a channel is moved by one release at a time, and two applies never overlap", () => {
    expect(wf["release.yml"].concurrency).toEqual({ group: "release-channel", "cancel-in-progress": false });
    expect(wf["deploy.yml"].concurrency).toEqual({ group: "deploy-terraform", "cancel-in-progress": false });
  });

  it("release: on a v* tag; typecheck, lint and unit tests before the build; the version from the tag; binaries uploaded before the channel is moved", () => {
    const r = wf["release.yml"];
    // PyYAML reads the bare key `on` as true (YAML 1.1).
    expect(r.on ?? r.true).toMatchObject({ push: { tags: ["v*"] } });
    const names = (r.jobs.publish.steps as Any[]).map((s) => String(s.name ?? s.uses));
    const at = (re: RegExp) => names.findIndex((n) => re.test(n));
    expect(at(/^Typecheck and lint$/)).toBeGreaterThan(-1);
    expect(at(/^Unit tests$/)).toBeLessThan(at(/^Build/));
    expect(runOf("release.yml", "publish", /^Unit tests$/)).toBe("npx vitest run test/unit");
    expect(runOf("release.yml", "publish", /^Build/)).toBe("npm run build");
    expect(r.jobs.publish.steps[at(/^Build/)].env.MLOPS_AGENT_VERSION).toBe("${{ steps.version.outputs.version }}");
    expect(runOf("release.yml", "publish", /^Version from the tag$/)).toContain('version="${TAG#v}"');
    const upload = at(/^Upload the version folder/);
    const move = at(/^Move the channel/);
    expect(upload).toBeGreaterThan(at(/^Sign/));
    expect(move).toBe(names.length - 1);
    expect(upload).toBeLessThan(move);
    expect(runOf("release.yml", "publish", /^Upload the version folder/)).toMatch(/oci os object bulk-upload [^\n]*\\\n[^\n]*--no-overwrite/);
    for (const job of ["publish", "resign"]) {
      expect(runOf("release.yml", job, /^Move the channel/)).toContain('oci os object put --namespace-name "$NAMESPACE" --bucket-name "$BUCKET"');
      const sign = (r.jobs[job].steps as Any[]).find((s) => /^Sign/.test(String(s.name)));
      expect(sign.run, job).toContain("--key-env RELEASE_SIGNING_KEY");
      expect(sign.env.RELEASE_SIGNING_KEY, job).toBe("${{ secrets.RELEASE_SIGNING_KEY }}");
      expect(r.jobs[job].environment, job).toBe("release");
    }
    // The signing key is in exactly the two signing steps' environments, nowhere else.
    expect(text["release.yml"]!.match(/secrets\.RELEASE_SIGNING_KEY/g)).toHaveLength(2);
  });

  it("deploy: on pushes to main touching terraform/; plan -out to an (encrypted) artifact; apply in the production environment of exactly that plan", () => {
    const d = wf["deploy.yml"];
    expect((d.on ?? d.true).push).toMatchObject({ branches: ["main"] });
    expect((d.on ?? d.true).push.paths).toContain("terraform/**");
    expect(runOf("deploy.yml", "plan", /^terraform init/)).toBe("terraform init -input=false -backend-config=backend.hcl");
    expect(runOf("deploy.yml", "plan", /^terraform plan$/)).toContain("terraform plan -input=false -lock-timeout=10m -out=tfplan -detailed-exitcode");
    const upload = (d.jobs.plan.steps as Any[]).find((s) => String(s.uses).startsWith("actions/upload-artifact@"));
    expect(upload.with.path).toContain("terraform/tfplan.enc");
    expect(upload.with.path).toContain("terraform/.terraform.lock.hcl");
    expect(upload.with["include-hidden-files"]).toBe(true);
    const apply = d.jobs.apply;
    expect(apply.needs).toBe("plan");
    expect(apply.environment).toBe("production");
    const download = indexOf("deploy.yml", "apply", (s) => String(s.uses).startsWith("actions/download-artifact@"));
    expect(apply.steps[download].with.name).toBe(upload.with.name);
    expect(runOf("deploy.yml", "apply", /^terraform apply$/)).toBe("terraform apply -input=false -lock-timeout=10m tfplan");
    expect(runOf("deploy.yml", "apply", /^terraform init/)).toContain("-lockfile=readonly");
    // Nothing in the apply job plans anew.
    for (const { job, step } of steps("deploy.yml")) if (job === "apply") expect(String(step.run ?? "")).not.toMatch(/terraform plan|-auto-approve/);
    // The plan never leaves the runner in clear.
    expect(runOf("deploy.yml", "plan", /^Encrypt the plan$/)).toContain("-pass env:TF_PLAN_PASSPHRASE -in tfplan -out tfplan.enc");
  });

  it("credentials reach OCI through ~/.oci/config (0600) written from secrets in env, never on a command line", () => {
    const action = readFileSync(join(REPO, ".github", "actions", "oci-credentials", "action.yml"), "utf8");
    expect(action).toContain("umask 077");
    for (const f of workflowFiles())
      for (const { job, step } of steps(f)) {
        // A secret is only ever put into env: or with: (never interpolated into a script).
        expect(String(step.run ?? ""), `${f} ${job} ${step.name ?? step.uses}`).not.toMatch(/\$\{\{\s*(secrets|inputs)\./);
      }
  });

  it("README.md's table lists exactly the secrets and repository variables the workflows read, with the workflows that read them", () => {
    const readme = readFileSync(join(REPO, "README.md"), "utf8");
    const section = /\n## Releases and deployment\n([\s\S]*?)(\n## |$)/.exec(readme)?.[1];
    expect(section, "README.md has no section ## Releases and deployment").toBeDefined();
    const listed = new Map<string, string>();
    for (const m of section!.matchAll(/^\| `([A-Z0-9_]+)` \| (secret|variable) \| ([a-z, ]+) \|/gm)) listed.set(`${m[2]} ${m[1]}`, m[3]!.trim());
    const used = new Map<string, Set<string>>();
    for (const f of workflowFiles())
      for (const m of text[f]!.matchAll(/\$\{\{\s*(secrets|vars)\.([A-Z0-9_]+)/g)) {
        const key = `${m[1] === "secrets" ? "secret" : "variable"} ${m[2]}`;
        if (!used.has(key)) used.set(key, new Set());
        used.get(key)!.add(f.replace(/\.yml$/, ""));
      }
    expect(Object.fromEntries([...listed].sort())).toEqual(Object.fromEntries([...used].map(([k, v]) => [k, [...v].sort().join(", ")]).sort()));
  });
});

describe("run: scripts outside actionlint's reach", () => {
  it("the oci-credentials action's script passes shellcheck", async (ctx) => {
    if (!hasShellcheck) ctx.skip("shellcheck is not on PATH");
    const action = (await parseYaml(readFileSync(join(REPO, ".github", "actions", "oci-credentials", "action.yml"), "utf8"))) as Any;
    const script = (action.runs.steps as Any[]).map((s) => String(s.run)).join("\n");
    const child = spawnSync("shellcheck", ["--shell=bash", "--format=gcc", "-"], { input: script, encoding: "utf8" });
    expect(child.stdout).toBe("");
    expect(child.status).toBe(0);
  });
});
