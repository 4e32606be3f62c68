// Command tierlock-reaper is tierlock's termination hook: an AWS Lambda function
// (provided.al2023, binary bootstrap) that frees the slots of EC2 instances that are
// terminating or terminated, in every tier, when EventBridge tells it so. See
// packaging/aws/README.md.
package main

import (
	"log"
	"os"
	"runtime/debug"
	"strconv"

	"github.com/aws/aws-lambda-go/lambda"
)

// Set at build time with -ldflags -X.
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	limitMemory(os.Getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), os.Getenv("GOMEMLIMIT"))
	f := &Function{Out: os.Stdout, Version: version + " (" + commit + ")"}
	// aws-lambda-go reports through the standard logger; route it to ours, request id included.
	log.SetFlags(0)
	log.SetOutput(f.StdLog())
	// f is a lambda.Handler (Invoke with the raw payload): the event is parsed by our own code,
	// which names what is malformed.
	lambda.Start(f)
}

// limitMemory tells the garbage collector the function's memory (in MB, as Lambda sets it),
// halved: a soft limit leaves room for what is not Go heap and for overshoot, unless GOMEMLIMIT says otherwise. Without it the
// collector lets the heap grow to twice what is live, and a read of large values (junk under
// the prefix) would pass the function's limit although what it keeps is small.
func limitMemory(sizeMB, gomemlimit string) {
	mb, err := strconv.Atoi(sizeMB)
	if err != nil || mb <= 0 || gomemlimit != "" {
		return
	}
	debug.SetMemoryLimit(int64(mb) << 20 / 2)
}
