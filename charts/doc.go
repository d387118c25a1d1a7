// Package charts draws the PNG charts of an importance report with
// gonum.org/v1/plot: the importance score of every matrix by layer, the
// precision chosen for each layer × component, and the measured error of
// every candidate precision against its bytes.
package charts
