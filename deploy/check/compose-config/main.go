// compose-config loads a Compose file the way `docker compose config` does — through
// compose-go, the loader docker compose itself uses: the Compose Specification's JSON schema,
// interpolation, normalization, path resolution and consistency checks (every service a
// depends_on names, every volume and network a service mounts) — and prints the resulting
// project as JSON, or the loader's error and exit status 1.
//
//	compose-config [-f FILE]... [-p NAME]
//
// Interpolation reads the process environment and the .env file beside the Compose file, as
// docker compose does.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

type files []string

func (f *files) String() string     { return fmt.Sprint(*f) }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	var paths files
	flag.Var(&paths, "f", "a Compose file (repeatable; default: compose.yaml in the working directory)")
	name := flag.String("p", "", "the project name (default: from the file, else its folder)")
	flag.Parse()
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected arguments %v", flag.Args()))
	}
	opts, err := cli.NewProjectOptions(paths,
		cli.WithName(*name),
		cli.WithWorkingDirectory(""),
		cli.WithOsEnv,
		cli.WithEnvFiles(),
		cli.WithDotEnv,
		cli.WithConfigFileEnv,
		cli.WithDefaultConfigPath,
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		fail(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "compose-config:", err)
	os.Exit(1)
}
