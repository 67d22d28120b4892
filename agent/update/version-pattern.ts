/** `<version>` of an agent release (bucket layout, manifest, MLOPS_AGENT_VERSION): semver-ish. scripts/build.mjs repeats it (plain JS). */
export const AGENT_VERSION_PATTERN = /^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$/;
