package kubectltag

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func help(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), args, &out, &errOut, Options{Client: newFixture(t).c})
	if code != 0 || errOut.Len() != 0 {
		t.Fatalf("%q: code %d stderr %q", args, code, errOut.String())
	}
	return out.String()
}

// TestRootHelp: `kubectl tag --help` (and bare `kubectl tag`) names itself
// as kubectl does, lists the commands in groups and points at options.
func TestRootHelp(t *testing.T) {
	for _, args := range [][]string{nil, {"--help"}, {"help"}} {
		out := help(t, args...)
		for _, want := range []string{
			"Usage:\n  kubectl tag [flags]\n  kubectl tag [command]\n",
			"Examples:\n  # Pin nginx:1.27",
			"Tag Commands:\n", "Served Generation Commands:\n", "Other Commands:\n",
			"\n  create ", "\n  list ", "\n  history ", "\n  check ",
			"\n  pin ", "\n  rollback ", "\n  upgrade ", "\n  unpin ",
			"\n  completion ", "\n  options ", "\n  version ",
			`Use "kubectl tag options" for a list of global command-line options`,
			`Use "kubectl tag [command] --help" for more information about a command.`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("%q lacks %q:\n%s", args, want, out)
			}
		}
		// The connection flags are in `options`, not repeated in every help.
		if strings.Contains(out, "\n  kubectl-tag ") || strings.Contains(out, "--kubeconfig string") {
			t.Errorf("%q: names kubectl-tag or lists the global flags:\n%s", args, out)
		}
	}
	opts := help(t, "options")
	for _, flag := range []string{"--kubeconfig", "--context", "--cluster", "--user", "--as ", "--as-group", "--as-uid",
		"--token", "--server", "--certificate-authority", "--insecure-skip-tls-verify", "--request-timeout"} {
		if !strings.Contains(opts, flag) {
			t.Errorf("options lacks %s", flag)
		}
	}
	if strings.Contains(opts, "--namespace") {
		t.Errorf("options shows the ignored --namespace:\n%s", opts)
	}
}

// TestCommandHelp: every command has kubectl's help shape: a one-line Short
// without a full stop, a dedented Long, Examples of "  # comment" lines each
// followed by "  kubectl tag ..." lines, and a usage line under kubectl tag.
func TestCommandHelp(t *testing.T) {
	a := &app{config: newConfigFlags()}
	root := a.rootCommand()
	for _, cmd := range root.Commands() {
		if cmd.Name() == "help" {
			continue
		}
		t.Run(cmd.Name(), func(t *testing.T) {
			if cmd.Short == "" || strings.Contains(cmd.Short, "\n") || strings.HasSuffix(cmd.Short, ".") {
				t.Errorf("Short %q", cmd.Short)
			}
			if cmd.Long != "" && (cmd.Long != strings.TrimSpace(cmd.Long) || strings.Contains(cmd.Long, "\t")) {
				t.Errorf("Long is not normalized: %q", cmd.Long)
			}
			checkExamples(t, cmd)
			if !strings.HasPrefix(cmd.UseLine(), "kubectl tag "+cmd.Name()) {
				t.Errorf("usage %q", cmd.UseLine())
			}
			out := help(t, cmd.Name(), "--help")
			if !strings.Contains(out, "Usage:\n  kubectl tag "+cmd.Name()) || !strings.Contains(out, `Use "kubectl tag options"`) {
				t.Errorf("help:\n%s", out)
			}
		})
	}
}

func checkExamples(t *testing.T, cmd *cobra.Command) {
	t.Helper()
	if cmd.Example == "" {
		t.Fatal("no Example")
	}
	comment := false
	for _, l := range strings.Split(cmd.Example, "\n") {
		switch {
		case l == "":
			comment = false
		case strings.HasPrefix(l, "  # "):
			comment = true
		case strings.HasPrefix(l, "  kubectl tag ") || strings.HasPrefix(l, "  source ") && cmd.Name() == "completion":
			if !comment {
				t.Errorf("example %q has no # comment above it", l)
			}
		default:
			t.Errorf("example line %q is neither '  # comment' nor '  kubectl tag ...'", l)
		}
	}
}

func TestTemplates(t *testing.T) {
	got := longDesc(`
		First line
		  indented more

		Last line.   `)
	if want := "First line\n  indented more\n\nLast line."; got != want {
		t.Errorf("longDesc = %q, want %q", got, want)
	}
	got = examples(`
			# Comment
			kubectl tag list

			# Another
			kubectl tag list -o wide`)
	if want := "  # Comment\n  kubectl tag list\n\n  # Another\n  kubectl tag list -o wide"; got != want {
		t.Errorf("examples = %q, want %q", got, want)
	}
}

// TestArgs: started as kubectl_complete-tag, the binary answers completion.
func TestArgs(t *testing.T) {
	for _, tt := range []struct {
		argv0 string
		want  []string
	}{
		{"/usr/local/bin/kubectl-tag", []string{"history", "a"}},
		{"/home/me/.krew/bin/kubectl_complete-tag", []string{"__complete", "history", "a"}},
		{`kubectl_complete-tag.exe`, []string{"__complete", "history", "a"}},
	} {
		if got := Args(tt.argv0, []string{"history", "a"}); !slices.Equal(got, tt.want) {
			t.Errorf("Args(%q) = %q, want %q", tt.argv0, got, tt.want)
		}
	}
}
