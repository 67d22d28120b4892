"""Drives the OCI Python SDK and ocifs against OCI in a box, the way MLflow's
oci-mlflow artifact plugin does: uploads through the SDK's UploadManager
(oci-mlflow's ArtifactUploader), reads, lists and deletes through
ocifs.OCIFileSystem (oci-mlflow's artifact repository), plus ocifs's own
writes (one-shot and multipart).

No endpoint is configured anywhere: the clients build the real default
hostnames from the region (objectstorage.<region>.oraclecloud.com,
auth.<region>.oraclecloud.com). Name resolution is replaced for this process
only: every *.oraclecloud.com:443 connects to 127.0.0.1:<box port> (TLS is
still verified against the real name, with REQUESTS_CA_BUNDLE = the test CA),
127.0.0.1 resolves as itself, anything else fails, so the script reaches
nothing but the box and IMDS (OCI_METADATA_BASE_URL on 127.0.0.1).

Usage: python ocifs-probe.py '<json>' with keys
  mode        "instance_principal" (OCIFS_IAM_TYPE=instance_principal, as the
              MLflow VM runs) or "api_key" (an API-key config dict)
  port        the box's port
  namespace, bucket, prefix, region
  api_key     {tenancy, user, fingerprint, key_file} for mode api_key
Prints one JSON object with what it saw; exits non-zero on the first failure.
"""

import hashlib
import json
import os
import socket
import sys
import tempfile

cfg = json.loads(sys.argv[1])
BOX_PORT = int(cfg["port"])
MIB = 1024 * 1024

resolved = []
_getaddrinfo = socket.getaddrinfo


def contained_getaddrinfo(host, port, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else str(host)
    resolved.append(f"{name}:{port}")
    if name.endswith(".oraclecloud.com") and int(port) == 443:
        return _getaddrinfo("127.0.0.1", BOX_PORT, *args, **kwargs)
    if name in ("127.0.0.1", "localhost"):
        return _getaddrinfo(name, port, *args, **kwargs)
    raise socket.gaierror(socket.EAI_NONAME, f"{name} is not reachable from this test")


socket.getaddrinfo = contained_getaddrinfo

import oci  # noqa: E402
import ocifs  # noqa: E402
from oci.object_storage import UploadManager  # noqa: E402

ns, bucket, prefix = cfg["namespace"], cfg["bucket"], cfg["prefix"]
root = f"oci://{bucket}@{ns}/{prefix}"
out = {"mode": cfg["mode"]}

if cfg["mode"] == "instance_principal":
    # What oci-mlflow's signer comes to on an MLflow VM: instance principals, IMDS for the rest.
    signer = oci.auth.signers.InstancePrincipalsSecurityTokenSigner()
    client = oci.object_storage.ObjectStorageClient(config={}, signer=signer)
    fs = ocifs.OCIFileSystem()  # OCIFS_IAM_TYPE=instance_principal from the environment
else:
    k = cfg["api_key"]
    config = {
        "tenancy": k["tenancy"],
        "user": k["user"],
        "fingerprint": k["fingerprint"],
        "key_file": k["key_file"],
        "region": cfg["region"],
    }
    oci.config.validate_config(config)
    client = oci.object_storage.ObjectStorageClient(config)
    fs = ocifs.OCIFileSystem(config=config)

out["sdk_endpoint"] = client.base_client.endpoint
out["ocifs_endpoint"] = fs.oci_client.base_client.endpoint


def sha(b):
    return hashlib.sha256(b).hexdigest()


def pattern(n, seed):
    """n deterministic bytes (no two parts alike)."""
    block = b"".join(hashlib.sha256(f"{seed}-{i}".encode()).digest() for i in range(4096))
    return (block * (n // len(block) + 1))[:n]


work = tempfile.mkdtemp(prefix="ocifs-probe-")

# 1. Uploads as oci-mlflow's ArtifactUploader makes them: UploadManager.upload_file.
um = UploadManager(client, allow_parallel_uploads=True, parallel_process_count=2)
small_path = os.path.join(work, "small.txt")
with open(small_path, "wb") as f:
    f.write(b"small artifact\n")
r = um.upload_file(ns, bucket, f"{prefix}/um/small.txt", small_path)
out["um_small_md5"] = r.headers.get("opc-content-md5")
big = pattern(2 * MIB + 123_457, "um")
big_path = os.path.join(work, "big.bin")
with open(big_path, "wb") as f:
    f.write(big)
r = um.upload_file(ns, bucket, f"{prefix}/um/big.bin", big_path, part_size=MIB)
out["um_big_multipart_md5"] = r.headers.get("opc-multipart-md5")
out["um_big_sha256"] = sha(big)

# 2. ocifs writes: below the block size one PutObject, above it a multipart upload.
with fs.open(f"{root}/fs/small.bin", "wb") as f:
    f.write(b"hello ocifs\n")
fsbig = pattern(11 * MIB + 5, "fs")
with fs.open(f"{root}/fs/big.bin", "wb", block_size=5 * MIB) as f:
    f.write(fsbig)
out["fs_big_sha256"] = sha(fsbig)

# 3. Reads: whole, ranged (fsspec's block cache reads with Range), download to a file.
out["cat_small"] = fs.cat_file(f"{root}/fs/small.bin").decode()
with fs.open(f"{root}/fs/big.bin", "rb", block_size=MIB) as f:
    f.seek(5 * MIB - 3)
    got = f.read(10)
out["ranged_ok"] = got == fsbig[5 * MIB - 3 : 5 * MIB + 7]
out["cat_range_ok"] = fs.cat_file(f"{root}/fs/big.bin", start=100, end=200) == fsbig[100:200]
fs.download(f"{root}/um/big.bin", os.path.join(work, "down.bin"))
with open(os.path.join(work, "down.bin"), "rb") as f:
    out["download_ok"] = f.read() == big

# 4. Listing with directory semantics (oci-mlflow's list_artifacts: glob, isdir, info).
out["ls_root"] = sorted((e["name"].split("/", 1)[1], e["type"]) for e in fs.ls(root, detail=True, refresh=True))
out["ls_fs"] = sorted((e["name"].split("/", 1)[1], e["type"], e["size"]) for e in fs.ls(f"{root}/fs", detail=True, refresh=True))
out["glob"] = sorted(fs.glob(f"{root}/*"))
out["isdir_fs"] = fs.isdir(f"{root}/fs")
out["isfile_small"] = fs.isfile(f"{root}/fs/small.bin")
out["exists_missing"] = fs.exists(f"{root}/fs/missing.bin")
info = fs.info(f"{root}/fs/big.bin")
out["info_file"] = {"type": info["type"], "size": info["size"], "etag": bool(info["etag"])}
out["info_dir"] = fs.info(f"{root}/um")["type"]

# 5. Deletes: one file, then a directory recursively (oci-mlflow's delete_artifacts).
fs.rm(f"{root}/fs/small.bin")
fs.rm(f"{root}/um", recursive=True)
fs.invalidate_cache()
out["after_rm"] = sorted(fs.find(root))

out["resolved"] = sorted(set(resolved))
print(json.dumps(out))
