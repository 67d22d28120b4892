#!/usr/bin/env node
// Development launcher: runs the TypeScript sources through tsx so that
// `npx mlops-agent` and `npm run up` work straight after `npm ci`, with no
// build step. The shipped artefact is the single executable in dist/.
import { register } from "tsx/esm/api";

register();
await import("../agent/main.ts");
