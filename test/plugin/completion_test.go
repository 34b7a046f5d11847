package plugin

import (
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/tagger-project/tagger/internal/rig"
)

// completions runs cobra's __complete request as a shell would, and returns
// the candidates (without descriptions) and the directive line.
func completions(t *testing.T, args ...string) (names []string, directive string) {
	t.Helper()
	r := kubectlTagArgs(t, append([]string{cobra.ShellCompRequestCmd}, args...)...)
	if r.code != 0 {
		t.Fatalf("completion failed: %s", r)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	directive = lines[len(lines)-1]
	for _, l := range lines[:len(lines)-1] {
		name, _, _ := strings.Cut(l, "\t")
		names = append(names, name)
	}
	return names, directive
}

// noFiles is cobra's ShellCompDirectiveNoFileComp as __complete prints it.
const noFiles = ":4"

// TestCompletion: Tag names and generations come from the real apiserver,
// with the connection flags typed on the line.
func TestCompletion(t *testing.T) {
	c := startCluster(t)
	kc := []string{"--kubeconfig", cluster.kubeconfig}
	up := rig.NewRegistry(t, rig.RegistryOptions{})
	up.PushImage(t, "team/comp", "v1", rig.ImageOptions{})
	for _, name := range []string{"comp-a", "comp-b", "other"} {
		deleteTagOnCleanup(t, c, name)
	}
	ok(t, "create comp-a --image "+up.Host()+"/team/comp:v1 --kubeconfig "+cluster.kubeconfig)
	ok(t, "create comp-b --image registry.invalid/comp/b:v1 --kubeconfig "+cluster.kubeconfig)
	ok(t, "create other --image registry.invalid/comp/other:v1 --kubeconfig "+cluster.kubeconfig)

	for _, cmd := range []string{"history", "check", "pin", "rollback", "upgrade", "unpin", "get"} {
		names, dir := completions(t, append(append([]string{cmd}, kc...), "comp-")...)
		if !slices.Equal(names, []string{"comp-a", "comp-b"}) || dir != noFiles {
			t.Errorf("%s comp-<TAB>: %q %s", cmd, names, dir)
		}
	}
	// The description is the image.
	r := kubectlTagArgs(t, append([]string{cobra.ShellCompRequestCmd, "history"}, append(kc, "comp-b")...)...)
	if !strings.Contains(r.stdout, "comp-b\tregistry.invalid/comp/b:v1\n") {
		t.Errorf("description: %q", r.stdout)
	}
	// One name only for history; list takes several, not twice the same.
	if names, _ := completions(t, append(append([]string{"history", "comp-a"}, kc...), "")...); len(names) != 0 {
		t.Errorf("history comp-a <TAB>: %q", names)
	}
	if names, _ := completions(t, append(append([]string{"list", "comp-a"}, kc...), "comp")...); !slices.Equal(names, []string{"comp-b"}) {
		t.Errorf("list comp-a comp<TAB>: %q", names)
	}
	// --generation completes the Tag's generations once the controller has one.
	rig.WaitFor(t, waitTimeout, "pin comp-a --generation <TAB> to offer generation 1", func() (bool, string) {
		names, _ := completions(t, append(append([]string{"pin", "comp-a"}, kc...), "--generation", "")...)
		return slices.Equal(names, []string{"1"}), strings.Join(names, ",")
	})
	// -o completes the formats.
	if names, _ := completions(t, "list", "-o", ""); !slices.Contains(names, "wide") || !slices.Contains(names, "jsonpath=") && !slices.Contains(names, "jsonpath") {
		t.Errorf("list -o <TAB>: %q", names)
	}
	// An unreachable cluster: an error directive, not a hang.
	names, dir := completions(t, "history", "--kubeconfig", cluster.nowhereConfig, "--request-timeout", "2s", "")
	if len(names) != 0 || dir != ":1" {
		t.Errorf("unreachable cluster: %q %s", names, dir)
	}
}

// TestCompletionScripts: completion prints a script for each shell, for the
// kubectl-tag binary.
func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{
		"bash":       "__start_kubectl-tag",
		"zsh":        "#compdef kubectl-tag",
		"fish":       "complete -c kubectl-tag",
		"powershell": "Register-ArgumentCompleter",
	} {
		out := ok(t, "completion "+shell)
		if !strings.Contains(out, want) || !strings.Contains(out, cobra.ShellCompRequestCmd) {
			t.Errorf("completion %s lacks %q or __complete", shell, want)
		}
	}
	fails(t, "completion tcsh", "want one shell of bash, zsh, fish, powershell")
	fails(t, "completion", "want one shell")
}
