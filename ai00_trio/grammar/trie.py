"""A byte trie over a tokenizer vocabulary, laid out breadth-first in numpy
arrays so that a whole level of the trie is advanced through a DFA at once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_EMPTY = np.zeros(0, dtype=np.int32)
SMALL_FRONTIER = 192  # below this many frontier nodes ...
SMALL_SUBTREE = 3000  # ... with fewer nodes below them, walk node by node in Python


class VocabTrie:
    """Byte trie of a vocabulary (token id -> bytes). Build it once per tokenizer.

    Tokens with empty bytes are not in the trie: `eos_id` (default: 0 when token 0
    has no bytes, as in the RWKV World vocab, else None) is allowed by masks exactly
    when the grammar is complete; other empty tokens are never allowed.
    """

    def __init__(self, token_bytes: Sequence[bytes], eos_id: int | None | str = "auto") -> None:
        self.vocab_size = len(token_bytes)
        if eos_id == "auto":
            eos_id = 0 if self.vocab_size and not token_bytes[0] else None
        if eos_id is not None and not 0 <= eos_id < self.vocab_size:
            raise ValueError(f"eos_id {eos_id} outside the vocabulary")
        self.eos_id: int | None = eos_id
        self.token_bytes = tuple(token_bytes)

        order = sorted((b, i) for i, b in enumerate(token_bytes) if b and i != eos_id)
        # preorder construction from the sorted list (longest common prefix)
        pre_parent = [-1]
        pre_byte = [0]
        pre_depth = [0]
        pre_token = [-1]
        dups: dict[int, list[int]] = {}
        path = [0]  # preorder node ids along the current path, by depth
        prev = b""
        for data, tid in order:
            n = min(len(prev), len(data))
            lcp = 0
            while lcp < n and prev[lcp] == data[lcp]:
                lcp += 1
            if lcp == len(data) and len(prev) == len(data):  # duplicate bytes
                dups.setdefault(path[len(data)], []).append(tid)
                continue
            del path[lcp + 1:]
            for d in range(lcp, len(data)):
                pre_parent.append(path[d])
                pre_byte.append(data[d])
                pre_depth.append(d + 1)
                pre_token.append(-1)
                path.append(len(pre_parent) - 1)
            pre_token[path[len(data)]] = tid
            prev = data

        depth = np.array(pre_depth, dtype=np.int32)
        perm = np.lexsort((np.arange(len(depth)), depth))  # BFS order, preorder within a level
        new_id = np.empty_like(perm)
        new_id[perm] = np.arange(len(perm))
        parent = np.array(pre_parent, dtype=np.int64)[perm]
        parent = np.where(parent >= 0, new_id[np.maximum(parent, 0)], -1)
        self.n_nodes = len(perm)
        self.node_byte = np.array(pre_byte, dtype=np.int32)[perm]
        self.node_token = np.array(pre_token, dtype=np.int32)[perm]
        self.depth = depth[perm]
        counts = np.bincount(parent[1:], minlength=self.n_nodes).astype(np.int32)
        first = np.full(self.n_nodes, self.n_nodes, dtype=np.int32)
        # children of a node are contiguous; the first one is the smallest id
        np.minimum.at(first, parent[1:], np.arange(1, self.n_nodes, dtype=np.int32))
        self.child_start = first
        self.child_count = counts
        self.parent = parent.astype(np.int32)
        self.dups = {int(new_id[k]): v for k, v in dups.items()}
        self.max_depth = int(depth.max()) if len(depth) else 0
        self.token_node = np.full(self.vocab_size, -1, dtype=np.int32)
        has = self.node_token >= 0
        self.token_node[self.node_token[has]] = np.flatnonzero(has)
        # subtree sizes (number of nodes below), for choosing a walk strategy
        size = np.ones(self.n_nodes, dtype=np.int64)
        for d in range(self.max_depth, 0, -1):
            level = np.flatnonzero(self.depth == d)
            np.add.at(size, self.parent[level], size[level])
        self.subtree_size = size
        # level layout for the dense walk from the root
        level_sizes = np.bincount(self.depth, minlength=self.max_depth + 2)
        self.level_start = np.concatenate([[0], np.cumsum(level_sizes)]).tolist()
        self.level_parent: list[np.ndarray] = [_EMPTY]
        self.level_byte: list[np.ndarray] = [_EMPTY]
        for d in range(1, self.max_depth + 1):
            lo, hi = self.level_start[d], self.level_start[d + 1]
            self.level_parent.append(
                (self.parent[lo:hi] - self.level_start[d - 1]).astype(np.int32))
            self.level_byte.append(np.ascontiguousarray(self.node_byte[lo:hi]))
        # token -> node, with tokens that are not in the trie pointing at a spare slot
        ext = self.token_node.copy()
        ext[ext < 0] = self.n_nodes
        for node, extra in self.dups.items():
            ext[extra] = node
        self.token_node_ext = ext
        # plain lists for the per-node walk of small frontiers
        self._cs = self.child_start.tolist()
        self._cc = self.child_count.tolist()
        self._nb = self.node_byte.tolist()

    @classmethod
    def from_tokenizer(cls, tokenizer) -> VocabTrie:
        """Trie of a tokenizer exposing `all_token_bytes` and `end_of_text_id`."""
        return cls(tokenizer.all_token_bytes, getattr(tokenizer, "end_of_text_id", "auto"))

    def walk_root(self, flat_table: np.ndarray, escape: np.ndarray, state: int,
                  rows: list[list[int]], escape_l: list[bool],
                  alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run a DFA (flattened [n_states*256] table, state 0 dead) from the root
        over the whole trie, level by level. Marks every reached node in `alive`
        (bool, n_nodes) and returns the (nodes, states) reached whose state is
        flagged in `escape` (where the walk may leave this DFA)."""
        esc_nodes: list[np.ndarray] = []
        esc_states: list[np.ndarray] = []
        st = np.array([state], dtype=np.int32)
        level_start = self.level_start
        for d in range(1, self.max_depth + 1):
            lo, hi = level_start[d], level_start[d + 1]
            ns = flat_table[st[self.level_parent[d]] * 256 + self.level_byte[d]]
            nz = np.flatnonzero(ns)
            if not len(nz):
                break
            if len(nz) * 8 < hi - lo or self.n_nodes - hi < SMALL_SUBTREE:  # sparse from here
                nodes = (nz + lo).astype(np.int32)
                states = ns[nz]
                alive[nodes] = True
                e = escape[states]
                if e.any():
                    esc_nodes.append(nodes[e])
                    esc_states.append(states[e])
                en, es = self.walk(flat_table, escape, nodes, states, rows, escape_l, alive)
                esc_nodes.append(en)
                esc_states.append(es)
                break
            alive[lo:hi] = ns != 0
            e = escape[ns]
            if e.any():
                idx = np.flatnonzero(e)
                esc_nodes.append((idx + lo).astype(np.int32))
                esc_states.append(ns[idx])
            st = ns
        if esc_nodes:
            return np.concatenate(esc_nodes), np.concatenate(esc_states)
        return _EMPTY, _EMPTY

    def walk(self, flat_table: np.ndarray, escape: np.ndarray, nodes: np.ndarray,
             states: np.ndarray, rows: list[list[int]], escape_l: list[bool],
             alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like walk_root, from each (node, state) pair, marking only nodes strictly
        below the start nodes."""
        child_start = self.child_start
        child_count = self.child_count
        node_byte = self.node_byte
        esc_nodes: list[np.ndarray] = []
        esc_states: list[np.ndarray] = []
        while len(nodes):
            if len(nodes) < SMALL_FRONTIER and int(self.subtree_size[nodes].sum()) < SMALL_SUBTREE:
                self._walk_small(rows, escape_l, nodes.tolist(), states.tolist(), alive,
                                 esc_nodes, esc_states)
                break
            counts = child_count[nodes]
            total = int(counts.sum())
            if total == 0:
                break
            ends = np.cumsum(counts)
            children = np.repeat(child_start[nodes] - (ends - counts), counts)
            children += np.arange(total, dtype=children.dtype)
            nxt = flat_table[np.repeat(states, counts) * 256 + node_byte[children]]
            keep = np.flatnonzero(nxt)
            if len(keep) != total:
                children = children[keep]
                nxt = nxt[keep]
            alive[children] = True
            e = escape[nxt]
            if e.any():
                esc_nodes.append(children[e])
                esc_states.append(nxt[e])
            nodes, states = children, nxt
        if esc_nodes:
            return np.concatenate(esc_nodes), np.concatenate(esc_states)
        return _EMPTY, _EMPTY

    def _walk_small(self, rows, escape_l, nodes, states, alive, esc_nodes, esc_states) -> None:
        """Depth-first per-node walk (for a few start nodes, e.g. the deep, sparse
        levels of the trie, where numpy's per-call overhead dominates)."""
        cs, cc, nb = self._cs, self._cc, self._nb
        out_t: list[int] = []
        out_n: list[int] = []
        out_s: list[int] = []
        stack = list(zip(nodes, states))
        pop, push = stack.pop, stack.append
        while stack:
            n, s = pop()
            row = rows[s]
            c = cs[n]
            for c in range(c, c + cc[n]):
                t = row[nb[c]]
                if t:
                    out_t.append(c)
                    if escape_l[t]:
                        out_n.append(c)
                        out_s.append(t)
                    if cc[c]:
                        push((c, t))
        if out_t:
            alive[out_t] = True
        if out_n:
            esc_nodes.append(np.array(out_n, dtype=np.int32))
            esc_states.append(np.array(out_s, dtype=np.int32))

    def new_alive(self) -> np.ndarray:
        """A cleared node-marking array for walk()/walk_root() (last slot: unused)."""
        return np.zeros(self.n_nodes + 1, dtype=bool)

    def mask_from_alive(self, alive: np.ndarray) -> np.ndarray:
        """Token mask from node marks: a token is allowed when its end node is."""
        return alive[self.token_node_ext]
