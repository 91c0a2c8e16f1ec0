package main

import "github.com/podwall/podwall/policy"

// This file owns what happens to flows already admitted when policy changes.

// afterApply runs after a new snapshot is in force and the kernel sets match it.
func (a *agent) afterApply(old, cur *policy.Snapshot) {}
