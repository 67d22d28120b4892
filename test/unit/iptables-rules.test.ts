/**
 * The rules.v4 editing the agent does on OCI's Ubuntu images, on the image's
 * own file (test/fixtures/firewall/ubuntu-oci-rules.v4): the ACCEPT rule goes
 * right before INPUT's REJECT, nothing else moves, removing it gives the
 * file back byte for byte. test/integration/firewall-iptables.test.ts does the
 * same against a real iptables in a network namespace.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  acceptRuleLine,
  fileRejectsInput,
  fileTags,
  insertIntoRulesFile,
  insertPosition,
  liveInputRules,
  removeFromRulesFile,
  splitRule,
} from "../../agent/firewall/iptables-rules.ts";

const UBUNTU = readFileSync(new URL("../fixtures/firewall/ubuntu-oci-rules.v4", import.meta.url), "utf8");
const MLFLOW = { role: "mlflow", port: 5000 };

describe("rules.v4 editing", () => {
  it("the image's file rejects input and has none of our rules", () => {
    expect(fileRejectsInput(UBUNTU)).toBe(true);
    expect(fileTags(UBUNTU)).toEqual([]);
  });

  it("inserts the ACCEPT rule just before INPUT's REJECT and changes no other line", () => {
    const next = insertIntoRulesFile(UBUNTU, MLFLOW);
    const lines = next.split("\n");
    const at = lines.indexOf(acceptRuleLine(MLFLOW));
    expect(lines[at - 1]).toBe("-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT");
    expect(lines[at + 1]).toBe("-A INPUT -j REJECT --reject-with icmp-host-prohibited");
    expect(lines.filter((_, i) => i !== at)).toEqual(UBUNTU.split("\n"));
    expect(fileTags(next)).toEqual([MLFLOW]);
  });

  it("is idempotent, keeps rules of several roles apart, and removing gives the original back", () => {
    const once = insertIntoRulesFile(UBUNTU, MLFLOW);
    expect(insertIntoRulesFile(once, MLFLOW)).toBe(once);
    const both = insertIntoRulesFile(once, { role: "serving", port: 8000 });
    expect(fileTags(both)).toEqual([MLFLOW, { role: "serving", port: 8000 }]);
    expect(removeFromRulesFile(removeFromRulesFile(both, { role: "serving", port: 8000 }), MLFLOW)).toBe(UBUNTU);
    expect(removeFromRulesFile(UBUNTU, MLFLOW)).toBe(UBUNTU);
  });

  it("looks only at the filter table's INPUT chain", () => {
    const text = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DROP\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n";
    expect(fileRejectsInput(text)).toBe(false);
    // With no REJECT the rule goes after the last INPUT rule.
    expect(insertIntoRulesFile(text, MLFLOW)).toContain(`-A INPUT -i lo -j ACCEPT\n${acceptRuleLine(MLFLOW)}\nCOMMIT`);
    expect(fileRejectsInput(text.replace(":INPUT ACCEPT", ":INPUT DROP"))).toBe(true);
    expect(() => insertIntoRulesFile("*nat\nCOMMIT\n", MLFLOW)).toThrow(/no \*filter table/);
  });

  it("reads `iptables -S INPUT` output: positions, quoting, our tag", () => {
    const listing = [
      "-P INPUT ACCEPT",
      "-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT",
      '-A INPUT -p tcp -m tcp --dport 5000 -m comment --comment "mlops-agent:mlflow" -j ACCEPT',
      "-A INPUT -j REJECT --reject-with icmp-host-prohibited",
    ].join("\n");
    const rules = liveInputRules(listing);
    expect(rules).toHaveLength(3);
    expect(insertPosition(rules)).toBe(3);
    expect(splitRule('-m comment --comment "See the \\"images\\" section" -j ACCEPT')).toEqual(["-m", "comment", "--comment", 'See the "images" section', "-j", "ACCEPT"]);
  });
});
