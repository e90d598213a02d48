package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/skiff-sh/skiff/agent/checkconfig"
)

func checkConfigCommand() *cli.Command {
	return &cli.Command{
		Name:  "check-config",
		Usage: "check that this kernel has what a Skiff node needs, and how to fix what is missing",
		Action: func(c *cli.Context) error {
			results := checkconfig.Host()
			if err := checkconfig.Format(os.Stdout, results); err != nil {
				return err
			}
			return checkconfig.Error(results)
		},
	}
}
