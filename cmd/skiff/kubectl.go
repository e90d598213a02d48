package main

import (
	"os"

	"github.com/urfave/cli/v2"
	kcli "k8s.io/component-base/cli"
	kubectl "k8s.io/kubectl/pkg/cmd"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"
)

// defaultKubeconfig is where `skiff server` writes the admin kubeconfig.
const defaultKubeconfig = "/etc/skiff/skiff.yaml"

func kubectlCommand() *cli.Command {
	return &cli.Command{
		Name:            "kubectl",
		Usage:           "run the embedded upstream kubectl",
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			// Like k3s: without $KUBECONFIG, use the kubeconfig the server wrote.
			if os.Getenv("KUBECONFIG") == "" {
				if _, err := os.Stat(defaultKubeconfig); err == nil {
					os.Setenv("KUBECONFIG", defaultKubeconfig)
				}
			}
			cmd := kubectl.NewDefaultKubectlCommand()
			cmd.SetArgs(c.Args().Slice())
			if err := kcli.RunNoErrOutput(cmd); err != nil {
				// Prints the error the way upstream kubectl does and exits.
				cmdutil.CheckErr(err)
			}
			return nil
		},
	}
}
