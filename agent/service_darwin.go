package agent

import (
	"fmt"
	"strings"
)

var launchdPlist = userFile("Library", "LaunchAgents", "org.kin.up.plist")

func (s Service) install() error {
	var b strings.Builder
	for _, a := range append([]string{s.Binary}, s.Args...) {
		fmt.Fprintf(&b, "    <string>%s</string>\n", xmlEscape(a))
	}
	text := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
  <key>Label</key><string>org.kin.up</string>
  <key>ProgramArguments</key><array>
%s  </array>
  <key>RunAtLoad</key><true/>
  <key>KeepAlive</key><true/>
</dict></plist>
`, b.String())
	if err := s.write(launchdPlist, text); err != nil {
		return err
	}
	return s.run("launchctl", "load", "-w", launchdPlist)
}

func (s Service) uninstall() error {
	s.run("launchctl", "unload", launchdPlist)
	s.remove(launchdPlist)
	return nil
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
