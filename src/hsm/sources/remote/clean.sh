#!/usr/bin/env bash
# clean.sh SWEEP_DIR SOURCE_DIR: remove this source's folder of the sweep, then the sweep
# folder if nothing else (another source on a shared file system) is left in it.
rm -rf -- "$2" && { rmdir -- "$1" 2>/dev/null; true; }
