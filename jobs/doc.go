// Package jobs stores content-addressed blobs and runs the two sides of a grid job: the
// worker that admits and executes requests, and the submitter that replicates a job across
// workers and accepts the output a quorum agrees on.
package jobs
