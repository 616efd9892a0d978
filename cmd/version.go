package cmd

import (
	"runtime/debug"
	"strings"
)

// Version and BuildDate are stamped by release builds (go run ./release):
//
//	-ldflags "-X kin/cmd.Version=v1.2.0 -X kin/cmd.BuildDate=2026-11-27T01:55:32Z"
//
// Without them, kin --version reports what the Go toolchain recorded in
// the binary: the module version and the VCS revision it was built from.
var (
	Version   = ""
	BuildDate = ""
)

// versionString is what kin --version prints after "kin version".
func versionString() string {
	bi, _ := debug.ReadBuildInfo()
	return describeVersion(Version, BuildDate, bi)
}

// describeVersion combines a stamped version and build date with the
// build info (nil when the binary has none): the version first, then the
// revision, whether the tree had uncommitted changes, and the dates.
func describeVersion(stamped, buildDate string, bi *debug.BuildInfo) string {
	var rev, committed string
	var modified bool
	v := stamped
	if v == "dev" {
		v = "" // the old default of the -ldflags variable says nothing
	}
	if bi != nil {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				committed = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version // a tag, or a pseudo-version made from the revision
		}
	}
	short := rev
	if len(short) > 12 {
		short = short[:12]
	}
	var details []string
	if rev != "" {
		d := "revision " + short
		if modified {
			d += " with uncommitted changes"
		}
		details = append(details, d)
	}
	if committed != "" {
		details = append(details, "committed "+committed)
	}
	if buildDate != "" {
		details = append(details, "built "+buildDate)
	}
	if v == "" {
		if rev == "" {
			return "unknown (built without version or VCS information: release builds stamp it, and go build or go install in a git clone records the revision)"
		}
		v = "devel-" + short
		if modified {
			v += "-dirty"
		}
	}
	if len(details) == 0 {
		return v
	}
	return v + " (" + strings.Join(details, ", ") + ")"
}
