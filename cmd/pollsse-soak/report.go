package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// summaryLine is the line printed every minute.
func (s *soak) summaryLine() string {
	st := s.stats
	faults, polls := s.up.faultCounts()
	n := 0
	for _, c := range faults {
		n += c
	}
	return fmt.Sprintf("summary: %d events checked in %d streams, %d storm clients, %d templated topics, %d faults in %d polls, %d+%d reloads, %d restarts, %d kills, worst keeper latency %s",
		st.events.Load(), st.sessions.Load(), st.stormClients.Load(), st.tmplCreated.Load(), n, polls,
		st.reloadsSame.Load(), st.reloadsChanged.Load(), st.restarts.Load(), st.kills.Load(), s.worstKeeper().Round(time.Millisecond))
}

// summaries prints the summary line every period until ctx ends.
func (s *soak) summaries(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.logf("%s", s.summaryLine())
		}
	}
}

func (s *soak) worstKeeper() time.Duration {
	var worst time.Duration
	for _, k := range s.keepers {
		k.r.mu.Lock()
		worst = max(worst, k.r.worst)
		k.r.mu.Unlock()
	}
	return worst
}

// report returns the final report.
func (s *soak) report(elapsed time.Duration, race bool) string {
	st := s.stats
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	raceNote := "without the race detector"
	if race {
		raceNote = "with the race detector"
	}
	line("pollsse-soak report")
	line("  command:    %s", s.o.command())
	line("  ran:        %s of %s, %d Caddy instance(s) on the %s store, built %s", elapsed.Round(time.Second), s.o.duration, len(s.insts), s.o.store, raceNote)
	if f := s.failed(); f != "" {
		line("  result:     BROKEN INVARIANT (reproduce with -seed %d): %s", s.o.seed, f)
	} else {
		line("  result:     every invariant held")
	}
	byProto := make([]string, 0, len(protos))
	for _, p := range protos {
		byProto = append(byProto, fmt.Sprintf("%s %d", p, st.byProto[p].Load()))
	}
	line("  events:     %d checked (document, version, ids) in %d streams (%s)", st.events.Load(), st.sessions.Load(), strings.Join(byProto, ", "))
	line("  clients:    %d keepers; %d hops (%d resumed by last_event_id, %d reset); %d storms of %d clients in all",
		len(s.keepers), st.hops.Load(), st.queryResumes.Load(), st.resets.Load(), st.storms.Load(), st.stormClients.Load())
	line("              %d slow readers (%d dropped by the handler), %d stalled readers (%d dropped)",
		st.slow.Load(), st.slowDropped.Load(), st.stalled.Load(), st.stalledDropped.Load())
	var bad []string
	for _, k := range []string{"expired", "malformed", "another topic's", "from before a restart", "another user's"} {
		bad = append(bad, fmt.Sprintf("%s %d", k, st.badIDs[k].Load()))
	}
	line("              ids that must get a snapshot: %s", strings.Join(bad, ", "))
	line("              %d templated topics created in %d streams (%d refused at max_topics, %d by max_new_topics), %d hostile placeholder values refused with 400",
		st.tmplCreated.Load(), st.tmplSessions.Load(), st.tmplCapped.Load(), st.tmplLimited.Load(), st.tmplRefused.Load())
	line("              %d per-user streams; mallory (refused credentials) got 401 %d times and never a document",
		st.userHops.Load(), st.malloryRefused.Load())
	line("              %d slowloris and %d silent connections, %d of them closed by Caddy within its read_header timeout",
		st.slowloris.Load(), st.halfOpen.Load(), st.abuseClosed.Load())
	verified, inconclusive := s.ledger.counts()
	line("  resumes:    %d replayed from the id sent, %d answered by a snapshot; %d of these checked against the log, %d not decidable",
		st.replays.Load(), st.resumeSnapshots.Load(), verified, inconclusive)
	faults, polls := s.up.faultCounts()
	n := 0
	kinds := make([]string, 0, len(faults))
	for k, c := range faults {
		n += c
		kinds = append(kinds, fmt.Sprintf("%s %d", k, c))
	}
	slices.Sort(kinds)
	line("  faults:     %d of %d polls: %s", n, polls, strings.Join(kinds, ", "))
	line("  operations: %d reloads with unchanged topics, %d with changed topics, %d stops and starts, %d kills (SIGKILL) and starts",
		st.reloadsSame.Load(), st.reloadsChanged.Load(), st.restarts.Load(), st.kills.Load())
	line("  backoff:    %d runs of failed polls were cut short by their topic's start anew, after it had no stream for its idle timeout", s.up.restartedRuns())
	if s.store != nil {
		line("  store:      redis, shared by the %d instances; %d samples found one with its store out of reach (it polls alone meanwhile) or a lease lost, which excused %d polls beyond the limits",
			len(s.insts), s.store.moments(), s.up.excusedPolls())
	}
	if race {
		line("  races:      none in the handler; %d in Caddy's own code (see caddy.out)", st.caddyRaces.Load())
	}
	line("  latency:    worst of a keeper %s (budget %s)", s.worstKeeper().Round(time.Millisecond), s.o.budget)
	line("              worst of the other readers that keep up (hoppers, storms, bad ids, users) %s", time.Duration(s.stats.worstReader.Load()).Round(time.Millisecond))
	var ks []*keeper
	ks = append(ks, s.keepers...)
	slices.SortFunc(ks, func(a, b *keeper) int { return int(b.r.worst - a.r.worst) })
	for _, k := range ks[:min(3, len(ks))] {
		line("              %s: %s over %d streams", k.name(), k.r.worst.Round(time.Millisecond), k.r.streams)
	}
	s.baseMu.Lock()
	for _, in := range s.insts {
		base, ok := s.baselines[in]
		last, ok2 := s.lastSample[in]
		if !ok || !ok2 {
			line("  resources:  %s: no phase ended after its last start", in.name())
			continue
		}
		d := s.worstDelta[in]
		line("  resources:  %s (run %s), baseline → end: goroutines %d → %d, heap in use %.1f → %.1f MB, open files %d → %d",
			in.name(), in.runID(), base.goroutines, last.goroutines, float64(base.heapInuse)/(1<<20), float64(last.heapInuse)/(1<<20), base.fds, last.fds)
		line("              worst after a phase: %+d goroutines, %+.1f MB heap, %+d files (allowed %d, %.0f MB or half, %d)",
			d.goroutines, float64(d.heapInuse)/(1<<20), d.fds, goroutineSlack, float64(heapSlack)/(1<<20), fdSlack)
	}
	s.baseMu.Unlock()
	return b.String()
}
