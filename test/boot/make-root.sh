#!/usr/bin/env bash
# Makes (once) the Debian 12 root the boot test boots with systemd-nspawn, and
# prints its path on stdout.
#
#   test/boot/make-root.sh [CACHE_DIR]      (default: <repo>/.cache/boot-root)
#
# The root is cached under CACHE_DIR/<key>/rootfs, where <key> hashes what
# defines the image: the suite, the package list, the customize() function
# below, the mirror and the host's extra CA certificates. A root is used only
# once it is complete (the `complete` marker is written last); builds are
# serialised with flock, and roots of other keys are deleted once a new one is
# complete. Runs never write into the cached root: the harness mounts an
# overlay on top of it per run.
#
# Needs root, debootstrap and the Debian archive keyring (Debian's
# `debootstrap` package); booting it needs `systemd-container`.
# BOOT_DEBIAN_MIRROR overrides the mirror taken from the host's apt sources.
set -euo pipefail

SUITE=bookworm
# systemd, systemd-sysv, dbus: a real init and `systemctl` in the container.
# cloud-init, ca-certificates, curl: run the user-data (curl fetches the agent);
# python3-cffi-backend is named because debootstrap cannot resolve the virtual
# python3-cffi-backend-api-* that cloud-init needs through python3-cryptography.
# python3, python3-venv: the agent builds role venvs from the system Python.
# iproute2, procps: `ss`, `ps`, `kill` for the test and for a person debugging.
# util-linux (essential) gives setpriv; passwd (required) gives useradd.
# firewalld, nftables, iptables, iptables-persistent (netfilter-persistent): the
# host firewalls of OCI's images, Oracle Linux's firewalld and Ubuntu's
# /etc/iptables/rules.v4, for the firewall boot test. Both are masked in the
# image (see customize); a container that wants one enables it:
#   firewalld (Oracle Linux):  systemctl unmask firewalld && systemctl enable --now firewalld
#   iptables (Ubuntu):         write /etc/iptables/rules.v4, then
#                              systemctl unmask netfilter-persistent && systemctl enable --now netfilter-persistent
# and must boot in a network namespace of its own (BootContainer's `network`
# option): in the host's namespace they would change the machine's firewall.
# libpam-systemd is named for firewalld's polkitd, which needs the virtual
# default-logind that debootstrap cannot resolve.
PACKAGES=systemd,systemd-sysv,dbus,cloud-init,python3-cffi-backend,curl,ca-certificates,python3,python3-venv,iproute2,procps,less,firewalld,nftables,iptables,iptables-persistent,libpam-systemd

repo="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${1:-$repo/.cache/boot-root}"

log() { echo "make-root: $*" >&2; }

[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }
command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install debootstrap systemd-container"; exit 1; }

# The first apt source of the host serving SUITE (one-line sources.list or
# deb822 .sources), so the image comes from the machine's own mirror.
find_source() { # SUITE
  local suite="$1" f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v s="$suite" '$1 == "deb" {
        u = ""
        for (i = 2; i <= NF; i++) {
          if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; continue }
          if (u == "") { u = $i; continue }
          if ($i == s) { print u; exit }
          break
        } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v s="$suite" 'BEGIN { RS = ""; FS = "\n" }
      { uris = ""; suites = ""; types = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
          if ($i ~ /^Suites:/) { suites = $i " " }
          if ($i ~ /^Types:/) { types = $i " " }
        }
        if (types ~ / deb / && suites ~ (" " s " ")) { split(uris, u, /[ \t]+/); print u[1]; exit } }' "$f"
  done
}
mirror="${BOOT_DEBIAN_MIRROR:-$(find_source "$SUITE" | head -n1)}"
mirror="${mirror:-http://deb.debian.org/debian}"
security="$(find_source "$SUITE-security" | head -n1)"

# Extra CAs the host trusts (a TLS-inspecting proxy's, for instance): the
# container reaches the package index through the same network, so it must
# trust them too.
extra_cas=(/usr/local/share/ca-certificates/*.crt)
[ -e "${extra_cas[0]}" ] || extra_cas=()

# Everything the image is made of except debootstrap itself. Changing this
# function changes the cache key.
customize() { # ROOT
  local root="$1" unit
  # Apt sources like the host's, for an agent that installs OS packages.
  {
    echo "deb $mirror $SUITE main"
    echo "deb $mirror $SUITE-updates main"
    [ -z "$security" ] || echo "deb $security $SUITE-security main"
  } >"$root/etc/apt/sources.list"

  if [ ${#extra_cas[@]} -gt 0 ]; then
    cp "${extra_cas[@]}" "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null 2>&1
  fi

  echo boot-test >"$root/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tboot-test\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
  # An empty machine-id, as in cloud images: systemd makes one on each first
  # boot (from the id nspawn passes), so every run is a new instance.
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  ln -sf /usr/share/zoneinfo/Etc/UTC "$root/etc/localtime"

  # cloud-init: NoCloud from the seed directory only, and nothing that would
  # touch the network (the container shares the host's network namespace),
  # disks or locales.
  cat >"$root/etc/cloud/cloud.cfg.d/90-boot-test.cfg" <<'EOF'
# The boot test's image: the NoCloud seed in /var/lib/cloud/seed/nocloud/ only.
datasource_list: [ NoCloud, None ]
# The container shares the host's network namespace: never configure it.
network: {config: disabled}
# No disks to grow in a container.
growpart: {mode: "off"}
resize_rootfs: false
# C.UTF-8 needs no locale-gen (slow); the agent needs no other locale.
locale: C.UTF-8
manage_etc_hosts: false
# Debian's module list without `ssh`: the image has no ssh server, and the
# module would only fail to make host keys. Everything else is stock.
cloud_init_modules:
  - migrator
  - seed_random
  - bootcmd
  - write-files
  - growpart
  - resizefs
  - disk_setup
  - mounts
  - set_hostname
  - update_hostname
  - update_etc_hosts
  - ca-certs
  - rsyslog
  - users-groups
EOF

  # Units that slow the boot, wait for a network nobody configures, fetch
  # from the network on a timer, or prompt on a console nobody reads.
  for unit in \
    systemd-networkd-wait-online.service systemd-networkd.service systemd-networkd.socket \
    apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer dpkg-db-backup.timer \
    systemd-firstboot.service console-getty.service getty@tty1.service serial-getty@console.service \
    systemd-timesyncd.service cloud-init-hotplugd.socket; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
  done

  # Both host firewalls off by default: the boot test's containers share the
  # host's network namespace, whose firewall is not ours. Masked, not just
  # disabled, so that nothing (D-Bus activation of firewalld included) starts
  # them. iptables-persistent's install saved whatever rules the chroot saw:
  # an image starts with no rules files (the Ubuntu-style test writes its own).
  for unit in firewalld.service netfilter-persistent.service nftables.service; do
    rm -f "$root/etc/systemd/system/"*.target.wants/"$unit"
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
  done
  # firewalld's D-Bus alias; `systemctl enable firewalld` makes it again.
  rm -f "$root/etc/systemd/system/dbus-org.fedoraproject.FirewallD1.service"
  rm -f "$root/etc/iptables/rules.v4" "$root/etc/iptables/rules.v6"

  chroot "$root" apt-get clean
  rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin "$root/var/log/"*.log
}

key="$( {
  echo "$SUITE $PACKAGES $mirror $security"
  declare -f customize
  [ ${#extra_cas[@]} -eq 0 ] || cat "${extra_cas[@]}"
} | sha256sum | cut -c1-16)"
dir="$cache/$key"
mkdir -p "$cache"

exec 9>"$cache/$key.lock"
flock 9
if [ -f "$dir/complete" ]; then
  echo "$dir/rootfs"
  exit 0
fi

start=$(date +%s)
rm -rf "$dir"
mkdir -p "$dir"
root="$dir/rootfs"
log "debootstrap $SUITE from $mirror into $root (key $key)"
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$mirror" >"$dir/debootstrap.log" 2>&1; then
  log "debootstrap failed; the end of $dir/debootstrap.log and of the root's debootstrap/debootstrap.log:"
  tail -n 15 "$dir/debootstrap.log" >&2
  tail -n 30 "$root/debootstrap/debootstrap.log" >&2 2>/dev/null || true
  exit 1
fi
customize "$root"
touch "$dir/complete"
log "root ready in $(($(date +%s) - start)) s: $(du -sh "$root" | cut -f1)"

# Older images (other keys) are no longer used by this checkout.
for old in "$cache"/*/; do
  old="${old%/}"
  [ "$old" = "$dir" ] && continue
  rm -rf "$old" "$old.lock"
done
echo "$root"
