/** The files and services of a desired role, apart from the compiler so its parts can share them. */
import type { ServiceSpec } from "../supervisor/types.ts";
import type { OwnerRef } from "./actions.ts";

export interface DesiredFile {
  readonly id: string;
  readonly path: string;
  readonly mode: number;
  readonly owner: OwnerRef;
  readonly secret: boolean;
  /** undefined while a secret it needs does not exist yet. */
  readonly content: string | undefined;
  readonly hash: string | undefined;
}

export type DesiredService = Omit<ServiceSpec, "user" | "inputsHash"> & {
  readonly userName: string;
  /** undefined while a file it reads is pending. */
  readonly inputsHash: string | undefined;
};
