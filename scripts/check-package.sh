#!/usr/bin/env bash
# Builds the Debian package (`cargo deb`, release build) and checks what it
# installs, unpacked in a scratch root: the files an operator expects, the
# system's libssl as a dependency, a binary that runs and accepts its own
# packaged configuration, and (where systemd-analyze exists) a unit that
# systemd accepts. `.ci/run` calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
# dpkg-shlibdeps (dpkg-dev) works out the libraries' packages for Depends;
# systemd-analyze (systemd) verifies the unit (best effort: a machine that
# cannot have it skips that check).
if ! command -v dpkg-shlibdeps >/dev/null 2>&1 || ! command -v systemd-analyze >/dev/null 2>&1; then
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends dpkg-dev
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends systemd || true
fi
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --locked
fi
cargo deb ${CARGO_DEB_ARGS:-}
deb=$(ls -t target/debian/hothot_*.deb | head -n 1)
echo "package: $deb"
contents=$(dpkg-deb -c "$deb")
failed=0
for path in ./usr/bin/hothot ./etc/hothot/hothot.yaml ./usr/lib/systemd/system/hothot.service \
  ./etc/logrotate.d/hothot ./usr/share/man/man1/hothot.1 \
  ./usr/share/doc/hothot/examples/hothot.yaml ./usr/share/doc/hothot/examples/prometheus.yml \
  ./usr/share/hothot/prometheus/hothot-rules.yml \
  ./usr/share/hothot/grafana/provisioning/dashboards/hothot.json \
  ./usr/share/hothot/grafana/provisioning/dashboards/hothot.yml \
  ./usr/share/hothot/grafana/provisioning/datasources/hothot.yml; do
  if ! grep -Eq " ${path//./\\.}(\.gz)?$" <<<"$contents"; then
    echo "missing from the package: $path" >&2
    failed=1
  fi
done
control=$(dpkg-deb -f "$deb")
echo "$control"
grep -q '^Depends:.*libssl3' <<<"$control" || { echo "Depends lacks libssl3 (the system OpenSSL)" >&2; failed=1; }
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
for conf in /etc/hothot/hothot.yaml /etc/logrotate.d/hothot; do
  grep -qx "$conf" <<<"$conffiles" || { echo "not a conffile: $conf" >&2; failed=1; }
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./postinst | grep -q 'adduser --system' ||
  { echo "postinst does not create the hothot user" >&2; failed=1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
"$root/usr/bin/hothot" --version
# The packaged configuration checks out (its log directory, which postinst
# creates, moved into the scratch root).
mkdir -p "$root/var/log/hothot"
sed "s#/var/log/hothot#$root/var/log/hothot#" "$root/etc/hothot/hothot.yaml" >"$root/check.yaml"
"$root/usr/bin/hothot" -t -c "$root/check.yaml"
ldd "$root/usr/bin/hothot" | grep -q 'libssl.so.3' || { echo "the binary does not link the system libssl" >&2; failed=1; }
unit="$root/usr/lib/systemd/system/hothot.service"
grep -q '^ExecReload=/usr/bin/hothot -s reload' "$unit" || { echo "no ExecReload" >&2; failed=1; }
if command -v systemd-analyze >/dev/null 2>&1; then
  # The unit names /usr/bin/hothot: verify a copy that names the unpacked
  # binary. systemd-analyze exits 0 even on a key it ignores: any word from
  # it is a failure.
  sed "s#/usr/bin/hothot#$root/usr/bin/hothot#g" "$unit" >"$root/hothot.service"
  verdict=$(systemd-analyze verify --man=no "$root/hothot.service" 2>&1) || failed=1
  if [ -n "$verdict" ]; then
    echo "systemd-analyze verify: $verdict" >&2
    failed=1
  fi
else
  echo "systemd-analyze not installed: the unit's syntax is not verified here"
fi
[ "$failed" -eq 0 ] && echo "package OK: $deb"
exit "$failed"
