package kubectltag

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tagger-project/tagger/pkg/version"
)

// VersionInfo is what `version -o json|yaml` prints.
type VersionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	BuildDate string `json:"buildDate"`
	GoVersion string `json:"goVersion"`
}

// versionCommand is `kubectl tag version`: the plugin's build, as --version
// prints it. It needs no cluster.
func versionCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version, commit, build date and Go version",
		Example: examples(`
			# The version line
			kubectl tag version

			# As JSON, for scripts
			kubectl tag version -o json`),
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf(cmd, "version takes no arguments, got %q", args)
			}
			if format != "" && format != outputJSON && format != outputYAML {
				return usageErrorf(cmd, "unknown output format %q: allowed formats are json, yaml", format)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format == "" {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), version.Line("kubectl-tag"))
				return err
			}
			i := version.Get()
			return printObject(cmd.OutOrStdout(), format, VersionInfo{
				Version: i.Version, Commit: i.Commit, BuildDate: i.Date, GoVersion: i.GoVersion,
			})
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "", "Output format. One of: (json, yaml).")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{outputJSON, outputYAML}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}
