"""A teacher served by an inference engine: a running `vllm serve` scores the teacher's sequences.

TRL's answer to a teacher too large for the training nodes. Route: vLLM's OpenAI-compatible completions API
(`POST /v1/completions` with the teacher's token ids as the prompt and vLLM's `prompt_logprobs`), not TRL's
`trl vllm-serve` `/get_sequence_logprobs/`: the completions API is what every `vllm serve` answers, so the
teacher can be any model a cluster already serves (and, with `--enable-lora`, an adapter), no TRL server
and no TRL dependency; it returns, at every prompt position, the top-n log-probabilities at temperature 1
(vLLM's raw log-probabilities) with their token ids, which is what the KL losses over the teacher's top-K
read. Costs of the route: JSON (TRL's server sends binary), and the log-probabilities of every prompt
position come back, the teacher's context and exemplars included, although only the answer positions are
read; and vLLM does not use its prefix cache for a request that asks for prompt log-probabilities (every
sequence runs from its first token; the local teacher reuses a shared prefix's keys and values). The
stdlib's urllib speaks HTTP here: one POST of JSON needs no client library in the training environment.

What it gives: for the KL losses over the teacher's top-K, `TeacherTargets` with the top-K
log-probabilities as `topk_values` (log-softmax values, which the KL losses treat as logits: a constant
shift per position changes nothing) and a log-normaliser of 0 (a tail bucket at temperature 1: the rest of
the mass is 1 - sum of the top-K probabilities); for the sampled-token estimator (distill.top_k null), the
log-probability of the answer's own token (`token_log_probs`), which vLLM returns at every prompt position
whatever K is (`prompt_logprobs=0` asks for it alone). What it cannot give is refused by the config
(config.py TeacherConfig._server_problems): raw logits, logits at the student's ids, a tail bucket at
another temperature, the whole distribution (sampled_token's baseline and token weights), samples.

Failure: a request is tried 1 + teacher.server_retries times, teacher.server_retry_wait seconds apart. The
step's targets are fetched for all its micro-batches before any of the step's collectives
(`prepare_step`), so a rank whose server stopped answering reports it at the same point as the others; the
training loop agrees on it across ranks, writes a checkpoint of the last finished step and stops. The loss
never sees a missing target as a zero.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Optional

import torch

from fsdistill.distill.alignment import answer_positions
from fsdistill.distill.losses import TeacherTargets
from fsdistill.errors import UserError

# Digits, spaces, punctuation and non-ASCII: where two tokenizers of one vocabulary would part.
TOKENIZATION_PROBE = "Natalia sold 48 clips in April, and half as many in May — ¿cuántos?\n\n  x = 3.5 * 12"


def batch_key(batch) -> bytes:
    """A micro-batch's teacher ids as bytes: the same sequences give the same targets."""
    ids = batch.teacher_ids.cpu()
    return str(tuple(ids.shape)).encode() + ids.numpy().tobytes()


class ServerUnavailable(Exception):
    """The teacher's server did not answer a request after every try (the message says what happened)."""


class ServerRefused(UserError):
    """The teacher's server answered a start-up check with something this run cannot use."""


class TeacherServer:
    """HTTP calls to one `vllm serve`: JSON in, JSON out, bounded retries on a failure that may pass."""

    def __init__(self, url: str, model: str, timeout: float, retries: int, retry_wait: float):
        self.url = url.rstrip("/")
        self.model = model
        self.timeout, self.retries, self.retry_wait = timeout, retries, retry_wait
        self.retried = 0  # tries after a failure, over the run (logged)

    def call(self, route: str, body: Optional[dict] = None) -> dict:
        """The JSON answer of GET (body None) or POST `route`. An HTTP 4xx is the request's fault: raised at
        once as urllib's HTTPError. Anything else (no connection, a timeout, a 5xx) is tried again; after the
        last try ServerUnavailable."""
        error = None
        for attempt in range(1 + self.retries):
            if attempt:
                self.retried += 1
                time.sleep(self.retry_wait)
            try:
                return self._once(route, body)
            except urllib.error.HTTPError as e:
                if e.code < 500:
                    raise
                error = f"HTTP {e.code}: {e.read().decode(errors='replace')[:300]}"
            except (urllib.error.URLError, OSError) as e:  # refused, reset, timed out
                error = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        raise ServerUnavailable(
            f"the teacher's server {self.url} did not answer {route} after {1 + self.retries} tries "
            f"({self.retry_wait:g} s apart; teacher.server_retries, teacher.server_retry_wait): {error}"
        )

    def _once(self, route: str, body: Optional[dict]) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + route, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.load(response)

    def prompt_logprobs(self, sequences: list[list[int]], top_k: int) -> list[list]:
        """For each token-id sequence, vLLM's prompt_logprobs: per position None (the first) or
        {str(token id): {"logprob", "rank", "decoded_token"}} holding the top_k ids (none for 0) and the
        sequence's own token. One request for the whole batch (vLLM batches it itself)."""
        body = {
            "model": self.model,
            "prompt": sequences,
            "max_tokens": 1,  # the completions API generates at least one token; it is not read
            "temperature": 0.0,
            "prompt_logprobs": top_k,
        }
        answer = self.call("/v1/completions", body)
        choices = sorted(answer["choices"], key=lambda c: c["index"])
        return [c["prompt_logprobs"] for c in choices]


def own_token_log_prob(position: dict, token: int) -> float:
    """The log-probability of the sequence's own token at one position of prompt_logprobs."""
    entry = position.get(str(token))
    if entry is None:
        raise ServerUnavailable(
            f"the server's prompt log-probabilities lack the sequence's own token {token}"
        )
    return entry["logprob"]


def top_k_entries(position: dict, top_k: int) -> tuple[list[int], list[float]]:
    """The top_k (ids, log-probabilities) of one position's prompt_logprobs, best first: the entries of
    rank <= top_k (vLLM adds the sequence's own token, with its true rank, when it is not among them)."""
    entries = sorted(
        ((v["rank"], int(token), v["logprob"]) for token, v in position.items() if v["rank"] <= top_k),
    )[:top_k]
    if len(entries) < top_k:
        raise ServerUnavailable(f"the server returned {len(entries)} of the {top_k} top log-probabilities")
    return [e[1] for e in entries], [e[2] for e in entries]


class ServedTeacher:
    """The Teacher protocol (distill/teacher.py) over a TeacherServer: targets at the answer positions from
    the server's prompt log-probabilities of the teacher's sequences.

    top_k: distill.top_k: the top-K log-probabilities (KL losses); None: the answer's own token's only
    (sampled_token). vocab_size: the ids shared with the student (modeling/vocabulary.py), or None.
    tokenizer: teacher.tokenizer (or teacher.model's), loaded here. tail_bucket: whether the loss reads a
    log-normaliser (distill.topk_support=tail_bucket; temperature 1).
    """

    def __init__(
        self,
        server: TeacherServer,
        tokenizer,
        top_k: Optional[int],
        vocab_size: Optional[int],
        tail_bucket: bool,
    ):
        self.server = server
        self.tokenizer = tokenizer  # the served model's, as the local vocabulary check read it
        self.top_k = top_k
        self.vocab_size = vocab_size
        self.tail_bucket = tail_bucket
        self.prepared: dict[bytes, TeacherTargets] = {}  # batch_key(batch) -> its targets, this step
        self.seconds = 0.0  # in requests this step (logged)

    # -- the step's targets ---------------------------------------------------------------------------

    def prepare_step(self, micro_batches) -> Optional[str]:
        """Fetch the targets of every micro-batch of the step (one request), before the step's collectives.
        Returns None, or the reason the server could not give them (the loop agrees on it across ranks)."""
        self.prepared.clear()
        batches = [mb.batch for mb in micro_batches]
        rows = [
            (b, i, batch.teacher_ids[i, : int(batch.teacher_mask[i].sum())].tolist())
            for b, batch in enumerate(batches)
            for i in range(batch.teacher_ids.shape[0])
        ]
        rows = [row for row in rows if batches[row[0]].num_answer_tokens > 0]
        tick = time.perf_counter()
        try:
            scored = self.server.prompt_logprobs([ids for _, _, ids in rows], self.top_k or 0) if rows else []
        except ServerUnavailable as e:
            return str(e)
        except urllib.error.HTTPError as e:
            return (
                f"the teacher's server {self.server.url} refused a request: HTTP {e.code}: {e.read()[:300]!r}"
            )
        finally:
            self.seconds = time.perf_counter() - tick
        by_row = {(b, i): logprobs for (b, i, _), logprobs in zip(rows, scored)}
        try:
            for b, batch in enumerate(batches):
                self.prepared[batch_key(batch)] = self._targets(batch, b, by_row)
        except ServerUnavailable as e:
            return str(e)
        return None

    def _targets(self, batch, b: int, by_row: dict) -> TeacherTargets:
        """TeacherTargets (N, top_k) at the N answer positions of micro-batch b from its rows'
        prompt_logprobs (by_row[(b, row)]); (N,) token_log_probs when top_k is None."""
        pos = answer_positions(batch)
        if self.top_k is None:
            # prompt_logprobs[j] is log p(token j | tokens < j); the answer token at j = p + 1 is predicted at p.
            own = [
                own_token_log_prob(by_row[(b, row)][p + 1], int(batch.teacher_ids[row, p + 1]))
                for row, p in zip(pos.batch_index.tolist(), pos.teacher_positions.tolist())
            ]
            return TeacherTargets(token_log_probs=torch.tensor(own, dtype=torch.float32))
        ids, values = [], []
        for row, p in zip(pos.batch_index.tolist(), pos.teacher_positions.tolist()):
            # prompt_logprobs[j] is the distribution of token j given tokens < j: predicted at position j-1.
            i, v = top_k_entries(by_row[(b, row)][p + 1], self.top_k)
            ids.append(i)
            values.append(v)
        indices = torch.tensor(ids, dtype=torch.long).reshape(-1, self.top_k)
        if self.vocab_size is not None and indices.numel() and int(indices.max()) >= self.vocab_size:
            raise ServerUnavailable(
                f"the server's top-{self.top_k} holds id {int(indices.max())}, beyond the {self.vocab_size} ids "
                "the student and teacher share"
            )
        topk_values = torch.tensor(values, dtype=torch.float32).reshape(-1, self.top_k)
        return TeacherTargets(
            topk_values=topk_values,
            topk_indices=indices,
            # log-softmax values: the log-normaliser of the whole vocabulary at temperature 1 is 0
            logsumexp=topk_values.new_zeros(topk_values.shape[0]) if self.tail_bucket else None,
            logsumexp_temperature=1.0 if self.tail_bucket else None,
        )

    # -- the Teacher protocol -------------------------------------------------------------------------

    def targets(self, batch, pos) -> TeacherTargets:
        """The targets prepare_step fetched for this micro-batch (looked up by its teacher ids: the loop
        hands over a copy moved to the device)."""
        targets = self.prepared.get(batch_key(batch))
        if targets is None:
            raise RuntimeError("ServedTeacher.targets: prepare_step did not fetch this micro-batch")
        device = batch.teacher_ids.device
        return TeacherTargets(
            **{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(targets).items()}
        )

    def logits_at(self, batch, pos, token_ids):
        raise RuntimeError("a served teacher gives no logits at chosen ids (refused by the config)")

    def sampling_model(self):
        raise RuntimeError("a served teacher does not sample here (refused by the config)")

    def self_check(self, vocab_size: int, device) -> None:
        """Start-up: the server answers, serves teacher.model, tokenizes as the local teacher tokenizer does
        (the one the vocabulary check read), and returns top-K log-probabilities for K = distill.top_k
        (vllm serve --max-logprobs). ServerRefused (exit 2) otherwise."""
        check_server(self.server, self.top_k or 0)
        served_tokenization_matches(self.server, self.tokenizer, TOKENIZATION_PROBE)

    def end_step(self, accelerator) -> None:
        """Nothing to share between processes."""

    def metrics(self) -> dict[str, float]:
        return {"teacher_server_seconds": self.seconds, "teacher_server_retries": float(self.server.retried)}


def check_server(server: TeacherServer, top_k: int) -> None:
    """ServerRefused (exit 2, before training) when the server is unreachable, does not serve the model,
    or refuses top_k prompt log-probabilities."""
    try:
        models = [m["id"] for m in server.call("/v1/models")["data"]]
    except ServerUnavailable as e:
        raise ServerRefused(f"teacher.server: {e}") from None
    if server.model not in models:
        raise ServerRefused(
            f"teacher.server {server.url} serves {models}, not teacher.model {server.model!r} (give teacher.model "
            "the name vllm serve was started with, or its --served-model-name)"
        )
    try:
        server.prompt_logprobs([[0, 1]], top_k)
    except urllib.error.HTTPError as e:
        raise ServerRefused(
            f"teacher.server {server.url} refused {top_k} prompt log-probabilities (distill.top_k): "
            f"{e.read().decode(errors='replace')[:300]}; start vllm serve with --max-logprobs {top_k} or more "
            "(its default is 20)"
        ) from None
    except ServerUnavailable as e:
        raise ServerRefused(f"teacher.server: {e}") from None


def served_tokenization_matches(server: TeacherServer, tokenizer, text: str) -> None:
    """The server's tokenizer gives `text` the ids the local teacher tokenizer gives it (the vocabulary
    check ran on the local one): ServerRefused otherwise."""
    try:
        served = server.call(
            "/tokenize", {"model": server.model, "prompt": text, "add_special_tokens": False}
        )
    except (ServerUnavailable, urllib.error.HTTPError) as e:
        raise ServerRefused(f"teacher.server: /tokenize failed: {e}") from None
    local = tokenizer(text, add_special_tokens=False)["input_ids"]
    if served["tokens"] != local:
        raise ServerRefused(
            f"teacher.server {server.url} tokenizes {text[:60]!r} as {served['tokens'][:12]}..., the local "
            f"teacher tokenizer ({tokenizer.name_or_path}) as {local[:12]}...: teacher.tokenizer must be the "
            "served model's tokenizer"
        )


def make_served_teacher(cfg, vocab_size: Optional[int]) -> ServedTeacher:
    """The ServedTeacher of teacher.server (checked at self_check), for distill.top_k (null: sampled_token,
    which reads the answer's own token only)."""
    from fsdistill.data.prompts import load_tokenizer

    t, d = cfg.teacher, cfg.distill
    server = TeacherServer(t.server, t.model, t.server_timeout, t.server_retries, t.server_retry_wait)
    tokenizer = load_tokenizer(t.tokenizer or t.model)
    return ServedTeacher(server, tokenizer, d.top_k, vocab_size, d.topk_support == "tail_bucket")
