#!/bin/sh
# What `make bench` and `make bench-quick` need from Debian: wrk to drive the load (without it bench/run.py
# falls back to its Python load generator, bench/loadgen.py), and PostgreSQL's server for --pg.
# Usage: sh bench/deps.sh "$(BENCH_ARGS)"
missing=""
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
case " $1 " in
  *" --pg "*) ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql" ;;
esac
[ -z "$missing" ] && exit 0
echo "Installing from apt:$missing"
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null; }; then
  echo "apt-get could not install$missing: going on without (the Python load generator replaces wrk)"
fi
exit 0
