// Package jobs runs the two sides of a grid job: the worker that admits and executes
// requests, and the submitter that replicates a job across workers and accepts the output
// a quorum agrees on. Both keep blobs in a store.Store, which the node serves.
package jobs
