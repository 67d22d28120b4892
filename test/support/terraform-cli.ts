/**
 * The `terraform` binary, where one is on PATH, run offline: an empty CLI
 * config (no plugin cache, no credentials, no warning about a missing
 * ~/.terraformrc), no checkpoint call (the version check that phones home),
 * no prompts, no colour. Only commands that need no provider are run through
 * it (fmt, init -backend=false and validate of provider-free folders,
 * console), so nothing is downloaded.
 *
 * Tests that need it call `terraformBinary()` and skip with
 * TERRAFORM_MISSING when it is undefined.
 */
import { spawn } from "node:child_process";
import { accessSync, constants, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

export const TERRAFORM_MISSING =
  "no terraform binary on PATH: the terraform fmt/validate/console checks need one (any 1.5+; the HCL-parser checks still ran)";

/** The first executable `terraform` on PATH, or undefined. */
export function terraformBinary(): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, "terraform");
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** An empty CLI config file: one fixed path shared by every test process (same content, so writing it again is harmless). */
function emptyCliConfig(): string {
  const file = join(tmpdir(), "mlops-agent-tests.terraformrc");
  writeFileSync(file, "");
  return file;
}

export interface TerraformResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `terraform ARGS` in `cwd`, with `input` on stdin (console reads its
 * expression there). Resolves with the exit code and both streams; throws
 * only when the binary is missing or cannot start, or after `timeoutMs`.
 */
export function terraform(args: readonly string[], opts: { cwd: string; input?: string; timeoutMs?: number }): Promise<TerraformResult> {
  const bin = terraformBinary();
  if (!bin) return Promise.reject(new Error(TERRAFORM_MISSING));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TF_CLI_CONFIG_FILE: emptyCliConfig(),
    CHECKPOINT_DISABLE: "1",
    TF_IN_AUTOMATION: "1",
    TF_INPUT: "0",
  };
  for (const k of Object.keys(env)) if (k.startsWith("TF_VAR_") || k === "TF_DATA_DIR" || k === "TF_PLUGIN_CACHE_DIR") delete env[k];
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { cwd: opts.cwd, env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`terraform ${args.join(" ")} did not finish in ${opts.timeoutMs ?? 60_000} ms`));
    }, opts.timeoutMs ?? 60_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.end(opts.input ?? "");
  });
}

/** Like terraform(), but a non-zero exit or an `Error:` on stderr is an error carrying both streams. */
export async function terraformOk(args: readonly string[], opts: { cwd: string; input?: string; timeoutMs?: number }): Promise<TerraformResult> {
  const r = await terraform(args, opts);
  if (r.code !== 0 || /^(?:│ )?Error: /m.test(r.stderr)) {
    throw new Error(`terraform ${args.join(" ")} (in ${opts.cwd}) failed with exit ${r.code}:\n${r.stderr}${r.stdout}`);
  }
  return r;
}
