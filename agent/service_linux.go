package agent

import "fmt"

var systemdUnit = userFile(".config", "systemd", "user", "kin.service")

func (s Service) install() error {
	text := fmt.Sprintf("[Unit]\nDescription=kin: stay reachable for friends\nAfter=network-online.target\n\n[Service]\nExecStart=%s %s\nRestart=always\nRestartSec=5\n\n[Install]\nWantedBy=default.target\n",
		quoteArgs(s.Binary), quoteArgs(s.Args...))
	if err := s.write(systemdUnit, text); err != nil {
		return err
	}
	return s.run("systemctl", "--user", "enable", "--now", "kin.service")
}

func (s Service) uninstall() error {
	s.run("systemctl", "--user", "disable", "--now", "kin.service")
	s.remove(systemdUnit)
	return nil
}
