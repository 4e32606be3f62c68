// Command tierlock-reaper is tierlock's termination hook: an AWS Lambda function
// (provided.al2023, binary bootstrap) that frees the slots of EC2 instances that are
// terminating or terminated, in every tier, when EventBridge tells it so. See
// packaging/aws/README.md.
package main

import (
	"log"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
)

// Set at build time with -ldflags -X.
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	f := &Function{Out: os.Stdout, Version: version + " (" + commit + ")"}
	// aws-lambda-go reports through the standard logger; route it to ours, request id included.
	log.SetFlags(0)
	log.SetOutput(f.StdLog())
	// f is a lambda.Handler (Invoke with the raw payload): the event is parsed by our own code,
	// which names what is malformed.
	lambda.Start(f)
}
