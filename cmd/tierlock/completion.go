package main

import (
	_ "embed"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// The completion scripts urfave/cli v2 ships (its autocomplete/ folder, copied verbatim; the
// tests compare them with the module's). They hold no knowledge of tierlock: they call
// `tierlock ... --generate-bash-completion`, which urfave/cli answers from the command
// definitions, so completion can never drift from the flags.
var (
	//go:embed autocomplete/bash_autocomplete
	bashAutocomplete string
	//go:embed autocomplete/zsh_autocomplete
	zshAutocomplete string
)

// completionScripts are what `tierlock completion SHELL` prints, by shell.
var completionScripts = map[string]func() string{
	"bash": bashCompletion,
	"zsh":  zshCompletion,
}

// bashEval is the line of urfave's bash script that asks for the candidates. It evaluates the
// line typed so far as shell code, so TAB after `--tier $(touch x)` or `a; touch x` would run
// touch. bashAsk hands the words to tierlock as they were typed instead: nothing in them is
// expanded or run, and tierlock only needs them to know where the cursor is.
const (
	bashEval = `    opts=$(eval "${requestComp}" 2>/dev/null)` + "\n"
	bashAsk  = `    # tierlock: the words as typed, never evaluated (eval would run $(...) or ; on TAB), and` + "\n" +
		`    # the word under the cursor always, even empty: "run --<TAB>" then differs from "run -- <TAB>".` + "\n" +
		`    opts=$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)` + "\n"
)

// bashCompletion sets PROG, which the script otherwise takes from its file name: that is
// right in /usr/share/bash-completion/completions/tierlock, wrong under `source <(...)`. It
// replaces the script's eval (bashEval) by bashAsk.
func bashCompletion() string {
	return "# bash completion for tierlock: urfave/cli v2's autocomplete/bash_autocomplete, without its eval.\n" +
		"# Installed as /usr/share/bash-completion/completions/tierlock, or: source <(tierlock completion bash)\n" +
		"PROG=tierlock\n" + strings.Replace(bashAutocomplete, bashEval, bashAsk, 1)
}

// zshCompletion names the program in the #compdef line (compinit reads that line as text, so
// it cannot be a variable), and completes on the first TAB when zsh autoloads the file from
// $fpath as the body of _tierlock, where urfave's script would only register itself.
func zshCompletion() string {
	script := strings.ReplaceAll(zshAutocomplete, "$PROG", "tierlock")
	first, rest, _ := strings.Cut(script, "\n")
	return first + "\n" +
		"# zsh completion for tierlock: urfave/cli v2's autocomplete/zsh_autocomplete.\n" +
		"# Installed as _tierlock in a directory of $fpath, or after compinit: source <(tierlock completion zsh)\n" +
		rest +
		"\n# Autoloaded from $fpath, this file is the body of _tierlock: complete this request too.\n" +
		"if [[ \"${funcstack[1]}\" = \"_tierlock\" ]]; then\n  _cli_zsh_autocomplete \"$@\"\nfi\n"
}

func (a *App) completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script for bash or zsh",
		ArgsUsage: "bash|zsh",
		UsageText: "source <(tierlock completion bash)",
		// What `tierlock completion <TAB>` offers, through urfave's completion hook.
		BashComplete: func(c *cli.Context) {
			for _, shell := range slices.Sorted(maps.Keys(completionScripts)) {
				fmt.Fprintln(c.App.Writer, shell)
			}
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usage("completion: want one shell, bash or zsh; got %q", c.Args().Slice())
			}
			script, ok := completionScripts[c.Args().First()]
			if !ok {
				return usage("completion: unknown shell %q: want bash or zsh", c.Args().First())
			}
			fmt.Fprint(a.Stdout, script())
			return nil
		},
	}
}
