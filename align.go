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
// order; a longest sequence of matched elements that keep their order stays
// in place, the other matched elements move, and the elements left between
// two that stay are changed in place pairwise, then removed or added.
func (w *patchWriter) align(p int, A, B []uint32) {
	from := w.matchEqual(A, B)
	stay := longestIncreasing(from)
	role := roles(from, stay, len(A))
	pairChanged(from, stay, role)

	pl := newPlacer(w, p, len(A), len(B), role)
	for j := range B {
		if w.over() {
			return
		}
		switch i := int(from[j]); {
		case i < 0:
			pl.add(B[j])
		case role[i] == roleMoved:
			pl.move(i)
		default:
			pl.change(i, A[i], B[j])
		}
	}
	pl.advance(len(A))
}

// matchEqual returns, for each element of B, the index of the first element
// of A equal to it that no element of B before it took, or -1.
func (w *patchWriter) matchEqual(A, B []uint32) []int32 {
	// heads[h] is the first element of A of hash h not yet taken, and
	// sameNext[i] the next element of A after i of the same hash.
	heads := make(map[uint64]int32, len(A))
	sameNext := make([]int32, len(A))
	for i := len(A) - 1; i >= 0; i-- {
		h := w.a.nodes[A[i]].hash
		if j, ok := heads[h]; ok {
			sameNext[i] = j
		} else {
			sameNext[i] = -1
		}
		heads[h] = int32(i)
	}
	from := make([]int32, len(B))
	for j := range B {
		from[j] = -1
		h := w.b.nodes[B[j]].hash
		if i, ok := heads[h]; ok && i >= 0 && sameText(w.a, A[i], w.b, B[j]) {
			from[j] = i
			heads[h] = sameNext[i]
		}
	}
	return from
}

// roles returns the role of each of the n elements of A, from the matches
// of the elements of B and those of them that stay.
func roles(from []int32, stay []bool, n int) []uint8 {
	role := make([]uint8, n)
	for j, i := range from {
		if i >= 0 {
			if stay[j] {
				role[i] = roleKept
			} else {
				role[i] = roleMoved
			}
		}
	}
	return role
}

// pairChanged pairs the unmatched elements of A and B in order between two
// elements that stay: each pair is one element changed in place, kept in
// role and matched in from.
func pairChanged(from []int32, stay []bool, role []uint8) {
	n, m := len(role), len(from)
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
}

// A placer writes the operations for the elements of B from left to right.
// The array is then the first p elements, the elements placed so far (the
// prefix), the elements of A not yet placed (the rest), in A's order, and
// the elements after the change. An element of A that moves further right
// than an element that stays is parked: left in the prefix until its place
// comes.
type placer struct {
	w    *patchWriter
	p    int
	role []uint8
	// state and parkedAt are those of each element of A: parkedAt is the
	// time of placing of a parked element.
	state    []uint8
	parkedAt []int32
	rest     fenwick // 1 for each element of A in the rest
	prefix   fenwick // 1 for each element of the prefix, by time of placing
	// total is the length of the prefix, clock the time of the next
	// placing.
	total, clock int
	// restStart is where the rest starts: the elements of A before it have
	// left the rest.
	restStart int
}

// States of an element of A in a placer.
const (
	stateRest = iota
	stateGone
	stateParked
)

func newPlacer(w *patchWriter, p, n, m int, role []uint8) *placer {
	pl := &placer{
		w:        w,
		p:        p,
		role:     role,
		state:    make([]uint8, n),
		parkedAt: make([]int32, n),
		rest:     make(fenwick, n),
		prefix:   make(fenwick, n+m),
	}
	for k := range pl.rest {
		pl.rest[k] = int32((k + 1) & -(k + 1))
	}
	return pl
}

// place counts one more element at the end of the prefix.
func (pl *placer) place() {
	pl.prefix.add(pl.clock, 1)
	pl.clock++
	pl.total++
}

// advance takes the elements of A before to out of the rest: those that
// move are parked, the others removed.
func (pl *placer) advance(to int) {
	w := pl.w
	for ; pl.restStart < to; pl.restStart++ {
		i := pl.restStart
		if pl.state[i] != stateRest {
			continue
		}
		pl.rest.add(i, -1)
		if pl.role[i] == roleMoved {
			pl.state[i], pl.parkedAt[i] = stateParked, int32(pl.clock)
			pl.place()
			continue
		}
		pl.state[i] = stateGone
		if w.over() {
			continue
		}
		n := w.pushIndex(pl.p + pl.total)
		w.remove()
		w.path = w.path[:n]
	}
}

// add places a new element, the value bi.
func (pl *placer) add(bi uint32) {
	w := pl.w
	n := w.pushIndex(pl.p + pl.total)
	w.withValue("add", bi)
	w.path = w.path[:n]
	pl.place()
}

// move places element i of A, from the prefix if it is parked there, or
// else from the rest.
func (pl *placer) move(i int) {
	var at int
	if pl.state[i] == stateParked {
		at = int(pl.prefix.sum(int(pl.parkedAt[i])))
		pl.prefix.add(int(pl.parkedAt[i]), -1)
		pl.total--
	} else {
		at = pl.total + int(pl.rest.sum(i))
		pl.rest.add(i, -1)
	}
	pl.state[i] = stateGone
	if at != pl.total {
		pl.w.move(pl.p+at, pl.p+pl.total)
	}
	pl.place()
}

// change places element i of A, the value ai, where it is, changed into
// the value bi: the elements of the rest before it leave the rest first.
func (pl *placer) change(i int, ai, bi uint32) {
	w := pl.w
	pl.advance(i)
	n := w.pushIndex(pl.p + pl.total)
	w.value(ai, bi)
	w.path = w.path[:n]
	pl.rest.add(i, -1)
	pl.state[i] = stateGone
	pl.restStart = i + 1
	pl.place()
}

// longestIncreasing marks a longest increasing subsequence of from, skipping
// the values below 0.
func longestIncreasing(from []int32) []bool {
	var tails []int // tails[k]: index in from of the end of the best subsequence of length k+1
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
	marked := make([]bool, len(from))
	if len(tails) > 0 {
		for j := tails[len(tails)-1]; j >= 0; j = prev[j] {
			marked[j] = true
		}
	}
	return marked
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
