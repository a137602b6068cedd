"""Instances for the training loop, epoch by epoch: :class:`InstanceBuilder` tokenizes a split once, builds each
epoch's rows with :func:`hfssl.text.nsp.build_instances` (or reads them from the cache), draws the next epoch in a
background thread while the current one trains, and deletes the cached rows of epochs the loop has left.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor, wait

from datasets import Dataset

from hfssl.errors import UserError
from hfssl.text.encode import flat_corpus, tokenize_documents
from hfssl.text.nsp import NSPArgs, build_instances, instance_stats


@contextlib.contextmanager
def _quiet_progress():
    """No ``datasets`` progress bars while inside (the training loop's own bar stays readable)."""
    import datasets

    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


class InstanceBuilder:
    """Tokenized documents + :class:`NSPArgs` for the training loop: ``for_epoch(epoch)`` builds (or
    reads from cache) that epoch's instances, ``draw_ahead(epoch)`` starts building one in a background thread
    (the training loop calls it for the next epoch while the current one trains), ``stats(ds)`` reports them."""

    def __init__(self, tokenized: Dataset, args: NSPArgs, *, cls_id: int, sep_id: int, seed: int = 0,
                 name: str = "corpus"):
        self.tokenized, self.args, self.cls_id, self.sep_id, self.seed = tokenized, args, cls_id, sep_id, seed
        self.name = name  # which documents, for error messages: "corpus", "training split", "held-out split"
        self._ahead: dict[int, Future] = {}  # epoch -> its build in the background thread
        self._drawer: ThreadPoolExecutor | None = None

    @classmethod
    def from_documents(cls, documents: Dataset, tokenizer, args: NSPArgs, *, seed: int = 0,
                       name: str = "corpus") -> InstanceBuilder:
        """Tokenize ``documents`` (column ``sentences``) and take ``[CLS]``/``[SEP]`` from the tokenizer."""
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise UserError("the tokenizer has no [CLS]/[SEP] token; NSP instances need both: give "
                            "--tokenizer_name_or_path a BERT-style tokenizer, or leave it unset to train one")
        tokenized = tokenize_documents(documents, tokenizer, num_proc=args.preprocessing_num_proc)
        return cls(tokenized, args, cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id, seed=seed,
                   name=name)

    def _build(self, epoch: int, keep_earlier_epochs: bool) -> Dataset:
        a = self.args
        return build_instances(self.tokenized, cls_id=self.cls_id, sep_id=self.sep_id,
                               max_seq_length=a.max_seq_length, short_seq_prob=a.short_seq_prob, nsp=a.nsp,
                               random_next_prob=a.random_next_prob, seed=self.seed, epoch=epoch,
                               num_proc=a.preprocessing_num_proc, name=self.name,
                               keep_earlier_epochs=keep_earlier_epochs)

    def for_epoch(self, epoch: int) -> Dataset:
        """The instances of ``epoch``. If :meth:`draw_ahead` started them, this waits for that build (and raises
        its error, if it failed) and then opens its cache file; the cached rows of the epochs between 0 and
        ``epoch`` are deleted here, when the loop has left them."""
        pending = self._ahead.pop(epoch, None)
        if pending is not None:
            pending.result()  # re-raises the build's error here
        return self._build(epoch, keep_earlier_epochs=False)

    def draw_ahead(self, epoch: int) -> bool:
        """Start building ``epoch``'s instances into the cache in a background thread and return at once (True),
        or False when there is nothing to gain: ``args.draw_ahead`` is off, the corpus is in memory (no cache
        file to hand the rows over), or that epoch is already on its way. The build is the one
        :meth:`for_epoch` would do (same rows, same cache file), with its progress bar hidden; with
        ``preprocessing_num_proc`` > 1 it runs in that many worker processes. Deletes nothing."""
        if not self.args.draw_ahead or not self.tokenized.cache_files or epoch in self._ahead:
            return False
        if self._drawer is None:
            self._drawer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hfssl-draw-ahead")

        def build() -> None:
            with _quiet_progress():
                self._build(epoch, keep_earlier_epochs=True)

        self._ahead[epoch] = self._drawer.submit(build)
        return True

    def finish(self) -> None:
        """Wait for the builds :meth:`draw_ahead` started (so no process exits with one half-written); their
        errors are raised by :meth:`for_epoch`."""
        wait(list(self._ahead.values()))

    def stats(self, instances: Dataset) -> dict:
        return instance_stats(instances, self.args.max_seq_length)

    def corpus_stats(self) -> dict:
        """Documents and sentences used, and what was dropped for having no tokens (as Google)."""
        corpus = flat_corpus(self.tokenized)
        return {"documents": len(self.tokenized), "documents_used": len(corpus.docs),
                "empty_documents_dropped": len(self.tokenized) - len(corpus.docs),
                "sentences_used": len(corpus.length), "empty_sentences_dropped": corpus.empty_sentences,
                "tokens": int(corpus.length.sum())}
