# shellcheck shell=bash
# Sets r to the absolute root, from $1 as configured: "~", "~/x", "/x" or "x" (below
# the home folder); trailing slashes are cut. The same rule as hsm.sources.hostpath.expand_root.
# shellcheck disable=SC2088 # '~/' is meant literally: the root as configured
case $1 in
  '~') r=$HOME ;;
  '~/'*) r=$HOME/${1#'~/'} ;;
  /*) r=$1 ;;
  *) r=$HOME/$1 ;;
esac
while [[ $r == ?*/ ]]; do r=${r%/}; done
