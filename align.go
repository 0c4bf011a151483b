package pollsse

import "slices"

// Roles of an element of the old array in align.
const (
	roleRemoved = iota // not in the new array
	roleKept           // in place, maybe changed
	roleMoved          // equal to an element elsewhere in the new array
)

// align writes the operations that turn the elements A of an array into B,
// where A and B start at index p. Elements equal in A and B are matched in
// order; the longest run of matched elements that keep their order stays in
// place, the other matched elements move, and the elements left between
// two that stay are changed in place pairwise, then removed or added.
func (w *patchWriter) align(p int, A, B []uint32) {
	n, m := len(A), len(B)

	// Match each element of B with the first unmatched equal element of A.
	heads := make(map[uint64]int32, n)
	sameNext := make([]int32, n)
	for i := n - 1; i >= 0; i-- {
		h := w.a.nodes[A[i]].hash
		if j, ok := heads[h]; ok {
			sameNext[i] = j
		} else {
			sameNext[i] = -1
		}
		heads[h] = int32(i)
	}
	from := make([]int32, m)
	for j := range B {
		from[j] = -1
		h := w.b.nodes[B[j]].hash
		if i, ok := heads[h]; ok && i >= 0 && sameValue(w.a, A[i], w.b, B[j]) {
			from[j] = i
			heads[h] = sameNext[i]
		}
	}
	stay := increasingRun(from)

	role := make([]uint8, n)
	move := make([]bool, m)
	for j, i := range from {
		if i >= 0 {
			if stay[j] {
				role[i] = roleKept
			} else {
				role[i] = roleMoved
				move[j] = true
			}
		}
	}
	// Between two elements that stay, pair the unmatched elements of A
	// and B in order: each pair is one element changed in place.
	ia, jb := 0, 0
	for j := 0; j <= m; j++ {
		if j < m && !stay[j] {
			continue
		}
		end := n
		if j < m {
			end = int(from[j])
		}
		i := ia
		for k := jb; k < j; k++ {
			if from[k] >= 0 {
				continue
			}
			for i < end && role[i] != roleRemoved {
				i++
			}
			if i == end {
				break
			}
			from[k] = int32(i)
			role[i] = roleKept
			i++
		}
		ia, jb = end+1, j+1
	}

	// Write the operations for B from left to right. The array is then
	// the first p elements, the elements placed so far (the prefix),
	// the elements of A not yet placed (the rest), in A's order, and the
	// elements after the change. An element of A that moves further right
	// than an element that stays is parked: left in the prefix until its
	// place comes.
	const (
		inRest = iota
		gone
		parked
	)
	state := make([]uint8, n)
	parkedAt := make([]int32, n)
	rest := make(fenwick, n) // 1 for each element of A in the rest
	for k := range rest {
		rest[k] = int32((k + 1) & -(k + 1))
	}
	prefix := make(fenwick, n+m) // 1 for each element of the prefix, by time of placing
	total, clock := 0, 0
	place := func() {
		prefix.add(clock, 1)
		clock++
		total++
	}
	rc := 0 // the elements of A before rc have left the rest
	advance := func(to int) {
		for ; rc < to; rc++ {
			if state[rc] != inRest {
				continue
			}
			rest.add(rc, -1)
			if role[rc] == roleMoved {
				state[rc], parkedAt[rc] = parked, int32(clock)
				place()
				continue
			}
			state[rc] = gone
			if w.over() {
				continue
			}
			n := w.pushIndex(p + total)
			w.remove()
			w.path = w.path[:n]
		}
	}
	for j := range B {
		if w.over() {
			return
		}
		i := int(from[j])
		switch {
		case i < 0:
			n := w.pushIndex(p + total)
			w.withValue("add", B[j])
			w.path = w.path[:n]
		case move[j]:
			var at int
			if state[i] == parked {
				at = int(prefix.sum(int(parkedAt[i])))
				prefix.add(int(parkedAt[i]), -1)
				total--
			} else {
				at = total + int(rest.sum(i))
				rest.add(i, -1)
			}
			state[i] = gone
			if at != total {
				w.move(p+at, p+total)
			}
		default:
			advance(i)
			n := w.pushIndex(p + total)
			w.value(A[i], B[j])
			w.path = w.path[:n]
			rest.add(i, -1)
			state[i] = gone
			rc = i + 1
		}
		place()
	}
	advance(n)
}

// increasingRun marks a longest subsequence of from whose values increase,
// skipping the values below 0.
func increasingRun(from []int32) []bool {
	var tails []int // tails[k]: index in from of the end of the best run of length k+1
	prev := make([]int, len(from))
	for j, v := range from {
		if v < 0 {
			continue
		}
		k, _ := slices.BinarySearchFunc(tails, v, func(t int, v int32) int { return int(from[t] - v) })
		if k > 0 {
			prev[j] = tails[k-1]
		} else {
			prev[j] = -1
		}
		if k == len(tails) {
			tails = append(tails, j)
		} else {
			tails[k] = j
		}
	}
	run := make([]bool, len(from))
	if len(tails) > 0 {
		for j := tails[len(tails)-1]; j >= 0; j = prev[j] {
			run[j] = true
		}
	}
	return run
}

// A fenwick tree counts the elements of a set of small integers.
type fenwick []int32

func (f fenwick) add(i int, v int32) {
	for i++; i <= len(f); i += i & -i {
		f[i-1] += v
	}
}

// sum returns the count of the elements below i.
func (f fenwick) sum(i int) int32 {
	var s int32
	for ; i > 0; i -= i & -i {
		s += f[i-1]
	}
	return s
}
