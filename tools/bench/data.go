package main

import (
	"encoding/csv"
	"fmt"
	"os"
	"strconv"
)

// readSonarRecords reads the sonar CSV file: 208 records of 60 numbers and a label.
func readSonarRecords(path string) ([][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(recs) == 0 || len(recs[0]) < 2 {
		return nil, fmt.Errorf("%s: no rows", path)
	}
	return recs, nil
}

// readSonar returns the features of every sonar row (the label dropped).
func readSonar(path string) ([][]float64, error) {
	recs, err := readSonarRecords(path)
	if err != nil {
		return nil, err
	}
	rows := make([][]float64, len(recs))
	for i, r := range recs {
		rows[i] = make([]float64, len(r)-1)
		for j, s := range r[:len(r)-1] {
			if rows[i][j], err = strconv.ParseFloat(s, 64); err != nil {
				return nil, fmt.Errorf("%s: row %d, column %d: %w", path, i+1, j+1, err)
			}
		}
	}
	return rows, nil
}
