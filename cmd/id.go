package cmd

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

func idCommand() *cli.Command {
	return &cli.Command{
		Name:  "id",
		Usage: "show your identity (made on first use): the public key friends add",
		Description: `Prints your public key line and your short peer ID. Send the key line to a
friend; they add it with:
    kin friends add YOURNAME "ssh-ed25519 AAAA..."
The private key stays in KIN_HOME/identity (or --identity) and never leaves
this machine.`,
		Action: idAction,
	}
}

func idAction(c *cli.Context) error {
	e, id, err := getEnvAnd(c, (*env).loadIdentity)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, id.AuthorizedKey())
	fmt.Fprintf(e.stderr, "your kin ID is %s\n", id.ID())
	return nil
}
