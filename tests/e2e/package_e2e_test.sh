#!/usr/bin/env bash
# The Debian packages (issue 14, "Packages"), end to end on this machine: tools/package builds both from
# BUILD_DIR; lintian finds no error in either; dpkg-deb -c lists what each must hold; the host package
# installs with dpkg -i alone (its Depends are what tools/deps installed), its binaries run from /usr/bin
# and /usr/sbin, llmorchd --once --dry-run works against the real libvirtd (a domain prefix that matches
# nothing, the packaged /etc/llmorch/llmorch.conf), and dpkg --purge leaves no file behind that was not
# there before. The agent package is only checked, not installed (it is for guests).
# Usage: package_e2e_test.sh SOURCE_DIR BUILD_DIR     (ctest: package_e2e, label e2e, as root)
set -euo pipefail
src=$1 build=$2
start=$SECONDS
fail() {
  echo "package_e2e: FAIL: $*" >&2
  exit 1
}
[[ $(id -u) -eq 0 ]] || fail "needs root (dpkg -i); run ctest as root"
for tool in lintian dpkg-shlibdeps; do
  command -v $tool >/dev/null || fail "$tool is missing; run tools/deps"
done
# Someone's own install or configuration would be overwritten, then purged: refuse instead.
if dpkg-query -W -f='${Status}' llmorch 2>/dev/null | grep -q installed; then
  fail "the llmorch package is installed on this machine; this test installs and purges it: dpkg --purge llmorch first"
fi
[[ ! -e /etc/llmorch ]] || fail "/etc/llmorch exists and is no package's; move it away (the test's dpkg -i would prompt over it)"

# --- build ---
t=$SECONDS
mapfile -t debs < <("$src/tools/package" --no-build "$build")
host=$(printf '%s\n' "${debs[@]}" | grep '/llmorch_') || fail "tools/package made no llmorch_*.deb: ${debs[*]}"
agent=$(printf '%s\n' "${debs[@]}" | grep '/llmorch-agent_') || fail "tools/package made no llmorch-agent_*.deb"
echo "package_e2e: tools/package: $((SECONDS - t)) s: $host $agent"

# Every install() rule names its package's component: a rule without one (CMake's "Unspecified") would
# install with `cmake --install` yet be in no package.
unspecified=$(mktemp -d)
DESTDIR=$unspecified cmake --install "$build" --component Unspecified >/dev/null
strays=$(find "$unspecified" -type f)
rm -rf "$unspecified"
[[ -z $strays ]] || fail "install() rules without COMPONENT host or agent (so in no package): $strays"

# --- lintian: no errors (warnings are printed) ---
t=$SECONDS
for deb in "$host" "$agent"; do
  rc=0
  out=$(lintian --tag-display-limit 0 --fail-on error "$deb" 2>&1) || rc=$?
  [[ -z $out ]] || echo "$out" | sed "s|^|lintian $(basename "$deb"): |"
  # 1: errors found; anything else but 0: lintian itself failed. Both fail.
  [[ $rc -eq 0 ]] || fail "lintian exited $rc on $deb (errors above)"
  if grep -q '^E: ' <<<"$out"; then fail "lintian reports errors on $deb (above)"; fi
done
echo "package_e2e: lintian: $((SECONDS - t)) s"

# --- contents ---
has() {  # has DEB PATH...
  local deb=$1 list
  shift
  list=$(dpkg-deb -c "$deb" | awk '{print $6}')
  for p in "$@"; do
    grep -qx "./${p#/}" <<<"$list" || fail "$(basename "$deb") lacks $p; it has:
$list"
  done
}
has "$host" /usr/bin/llmorch /usr/sbin/llmorchd /lib/systemd/system/llmorchd.service /etc/llmorch/llmorch.conf \
  /usr/share/llmorch/templates/llm-7b-q4.conf /usr/share/llmorch/templates/llm-70b-2node.conf \
  /usr/share/doc/llmorch/copyright /usr/share/doc/llmorch/changelog.Debian.gz \
  /usr/share/man/man8/llmorch.8.gz /usr/share/man/man8/llmorchd.8.gz /usr/share/man/man5/llmorch.conf.5.gz \
  /usr/share/man/man5/llmorch-template.5.gz /usr/share/bash-completion/completions/llmorch \
  /usr/share/bash-completion/completions/llmorchd
has "$agent" /usr/sbin/llmorch-agent /lib/systemd/system/llmorch-agent.service /lib/udev/rules.d/60-llmorch-agent.rules \
  /usr/share/doc/llmorch-agent/copyright /usr/share/doc/llmorch-agent/changelog.Debian.gz \
  /usr/share/man/man8/llmorch-agent.8.gz
# Nothing under the build's own prefix or the build tree.
if dpkg-deb -c "$host" "$agent" 2>/dev/null | awk '{print $6}' | grep -E '^\./usr/local/|/work/'; then
  fail "a package holds a file under /usr/local or the build tree"
fi
ctrl() { dpkg-deb --ctrl-tarfile "$1" | tar -xO "./$2"; }
[[ $(ctrl "$host" conffiles) == /etc/llmorch/llmorch.conf ]] || fail "llmorch's conffiles is not /etc/llmorch/llmorch.conf"
depends=$(dpkg-deb -f "$host" Depends)
for lib in libvirt0 libboost-program-options libspdlog1 libsystemd0 libc6 libstdc++6; do
  grep -q "$lib" <<<"$depends" || fail "llmorch's Depends lacks $lib (dpkg-shlibdeps): $depends"
done
[[ $(dpkg-deb -f "$host" Recommends) == "libvirt-daemon-system, qemu-system-x86" ]] ||
  fail "llmorch's Recommends is '$(dpkg-deb -f "$host" Recommends)'"
[[ -z $(dpkg-deb -f "$agent" Depends) ]] || fail "llmorch-agent has Depends: $(dpkg-deb -f "$agent" Depends)"
unit=$(dpkg-deb --fsys-tarfile "$host" | tar -xO ./lib/systemd/system/llmorchd.service)
grep -qx 'ExecStart=/usr/sbin/llmorchd' <<<"$unit" || fail "llmorchd.service does not start /usr/sbin/llmorchd"
unit=$(dpkg-deb --fsys-tarfile "$agent" | tar -xO ./lib/systemd/system/llmorch-agent.service)
grep -qx 'ExecStart=/usr/sbin/llmorch-agent' <<<"$unit" || fail "llmorch-agent.service does not start /usr/sbin/llmorch-agent"
grep -q 'ATTR{name}=="org.llmorch.agent.0"' <(dpkg-deb --fsys-tarfile "$agent" | tar -xO ./lib/udev/rules.d/60-llmorch-agent.rules) ||
  fail "the udev rule does not match the org.llmorch.agent.0 port"
tree=$(mktemp -d)
dpkg-deb -x "$agent" "$tree/root"
readelf -d "$tree/root/usr/sbin/llmorch-agent" | grep -q 'There is no dynamic section' ||
  fail "the packaged llmorch-agent is not static"
# The guest's unit verifies (pointed at the unpacked agent: verify wants ExecStart's binary to exist).
sed "s|^ExecStart=/usr/sbin/|ExecStart=$tree/root/usr/sbin/|" "$tree/root/lib/systemd/system/llmorch-agent.service" \
  >"$tree/llmorch-agent.service"
out=$(systemd-analyze verify --man=no "$tree/llmorch-agent.service" 2>&1) && [[ -z $out ]] ||
  fail "llmorch-agent.service does not verify: $out"
rm -rf "$tree"
echo "package_e2e: dpkg-deb -c and control fields: as expected"

# --- install, run, purge ---
# The directories the package touches. /etc/libvirt and /var/lib/libvirt are left out: other tests'
# guests change them meanwhile, and the package writes nothing there.
snapshot() {  # find fails on a missing /run/llmorch: that is an empty list, not an error
  { find /usr /etc /var/lib /run/llmorch -xdev \( -path /etc/libvirt -o -path /var/lib/libvirt \) -prune -o -print \
    2>/dev/null || true; } | sort
}
before=$(mktemp) after=$(mktemp)
trap 'dpkg --purge llmorch >/dev/null 2>&1 || true; rm -f "$before" "$after"' EXIT
snapshot >"$before"
t=$SECONDS
dpkg -i "$host" || fail "dpkg -i $host failed: its Depends should all be installed by tools/deps"
echo "package_e2e: dpkg -i: $((SECONDS - t)) s"
[[ $(dpkg-query -W -f='${Status}' llmorch) == "install ok installed" ]] || fail "llmorch is not 'install ok installed'"
/usr/bin/llmorch --version | grep -q "^llmorch " || fail "/usr/bin/llmorch --version"
/usr/sbin/llmorchd --version | grep -q "^llmorchd " || fail "/usr/sbin/llmorchd --version"
systemd-analyze verify --man=no /lib/systemd/system/llmorchd.service || fail "the installed llmorchd.service does not verify"
t=$SECONDS
# The packaged config, qemu:///system, the default state directory: as the service would, but one dry tick.
/usr/sbin/llmorchd --once --dry-run -c qemu:///system --domain-prefix llmorch-pkg-e2e-matches-nothing- ||
  fail "/usr/sbin/llmorchd --once --dry-run failed (is libvirtd running? tools/libvirtd-up)"
echo "package_e2e: llmorchd --once --dry-run: $((SECONDS - t)) s"
t=$SECONDS
dpkg --purge llmorch || fail "dpkg --purge llmorch failed"
echo "package_e2e: dpkg --purge: $((SECONDS - t)) s"
snapshot >"$after"
left=$(comm -13 "$before" "$after")
[[ -z $left ]] || fail "dpkg --purge left behind:
$left"
echo "package_e2e: purge left nothing behind ($(wc -l <"$before") paths compared)"
echo "package_e2e: passed in $((SECONDS - start)) s"
