package kubectltag

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tagger-project/tagger/pkg/version"
)

// versionCommand is `kubectl tag version`: the plugin's build, as --version
// prints it. It needs no cluster.
func versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version, commit, build date and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), version.Line("kubectl-tag"))
			return err
		},
	}
}
