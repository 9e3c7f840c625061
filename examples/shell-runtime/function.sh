# The handler of the shell-runtime example: it logs the event and answers with a greeting
# that echoes it back.
handler() {
  echo "received: $1" >&2
  printf '{"message":"hello from a shell runtime","event":%s}' "$1"
}
