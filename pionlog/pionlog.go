// Package pionlog sends the logs of pion's libraries (WebRTC, ICE, TURN)
// to slog, at debug level: what pion calls warnings and errors are routine
// on real networks (unreachable candidates, lost packets).
package pionlog

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/pion/logging"
)

// Factory makes pion loggers that write to log; nil discards.
func Factory(log *slog.Logger) logging.LoggerFactory {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return factory{log}
}

type factory struct{ log *slog.Logger }

func (f factory) NewLogger(scope string) logging.LeveledLogger {
	return logger{log: f.log.With("pion", scope)}
}

type logger struct{ log *slog.Logger }

func (l logger) Trace(string)                      {}
func (l logger) Tracef(string, ...interface{})     {}
func (l logger) Debug(string)                      {}
func (l logger) Debugf(string, ...interface{})     {}
func (l logger) Info(m string)                     { l.log.Debug(m) }
func (l logger) Infof(f string, a ...interface{})  { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l logger) Warn(m string)                     { l.log.Debug(m) }
func (l logger) Warnf(f string, a ...interface{})  { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l logger) Error(m string)                    { l.log.Debug(m) }
func (l logger) Errorf(f string, a ...interface{}) { l.log.Debug(fmt.Sprintf(f, a...)) }
