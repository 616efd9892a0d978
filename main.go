// Command kin connects the computers of people who know each other, peer to
// peer, identified by their SSH keys. See README.md and `kin --help`.
package main

import (
	"os"

	"kin/cmd"
)

func main() { os.Exit(cmd.Main(os.Args)) }
