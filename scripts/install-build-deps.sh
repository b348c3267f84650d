#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build hothot: Pingora's zlib-ng
# build needs cmake and a C compiler; etcd-client's, protoc.
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v make >/dev/null 2>&1 || missing+=(make)
# TLS (Pingora's openssl feature) links the system OpenSSL, found by pkg-config.
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
# etcd-client's build compiles etcd's gRPC definitions with protoc (#25).
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing build dependencies: ${missing[*]}" >&2
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
