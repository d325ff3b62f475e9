#!/usr/bin/env bash
# snapshot_done.sh CODE LATEST: mark the snapshot complete; LATEST (a symlink) points to it.
: > "$1.done" && ln -sfn -- "$1" "$2.new.$$" && mv -fT -- "$2.new.$$" "$2"
