/**
 * A stand-in for Terraform's templatefile() for the boot test, until
 * agent/bootstrap/render.ts (renderUserData) lands: plain `${name}`
 * interpolations only, `$${` for a literal `${` and `%%{` for a literal `%{`.
 * Anything else Terraform would treat as an expression or a directive is
 * refused, and so are names the template uses but `vars` lacks and names
 * `vars` has but the template never uses, so the test and Terraform can never
 * drift apart silently.
 */

const TOKEN = /\$\$\{|%%\{|\$\{([^}]*)\}|%\{/g;

export function renderUserData(template: string, vars: Readonly<Record<string, string>>): string {
  const used = new Set<string>();
  const rendered = template.replace(TOKEN, (token: string, inner: string | undefined) => {
    if (token === "$${") return "${";
    if (token === "%%{") return "%{";
    if (token === "%{") throw new Error("template directives (%{ ... }) are not supported: the bootstrap template uses plain interpolations only");
    const name = (inner ?? "").trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`only plain \${name} interpolations are supported, not \${${inner}}`);
    if (!Object.hasOwn(vars, name)) throw new Error(`template variable ${name} has no value`);
    used.add(name);
    return vars[name]!;
  });
  const unused = Object.keys(vars).filter((k) => !used.has(k));
  if (unused.length) throw new Error(`variables not used by the template: ${unused.join(", ")}`);
  return rendered;
}
