// Package safelog prints every log line of tierlock and its Lambda through safetext: a
// message or field may carry a key or value read from Consul (an error naming a key, a
// holder, a node), which must not reach a terminal or a log viewer as escapes or extra lines.
package safelog

import (
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/tierlock/tierlock/internal/safetext"
)

// Formatter formats with Inner after passing the message and every text field (strings,
// errors, Stringers) through safetext.Text; numbers and other values are left alone.
type Formatter struct {
	Inner logrus.Formatter
}

// Format implements logrus.Formatter.
func (f Formatter) Format(e *logrus.Entry) ([]byte, error) {
	clean := *e
	clean.Message = safetext.Text(e.Message)
	clean.Data = make(logrus.Fields, len(e.Data))
	for k, v := range e.Data {
		switch v := v.(type) {
		case string:
			clean.Data[k] = safetext.Text(v)
		case error:
			clean.Data[k] = safetext.Text(v.Error())
		case fmt.Stringer:
			clean.Data[k] = safetext.Text(v.String())
		default:
			clean.Data[k] = v
		}
	}
	return f.Inner.Format(&clean)
}

// Wrap makes l print through Formatter, around the formatter it has.
func Wrap(l *logrus.Logger) *logrus.Logger {
	if _, ok := l.Formatter.(Formatter); !ok {
		l.Formatter = Formatter{Inner: l.Formatter}
	}
	return l
}
