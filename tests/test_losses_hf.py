"""hf_loss plugs into transformers.Trainer and applies the right label shift."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
from transformers.modeling_outputs import CausalLMOutput, Seq2SeqLMOutput

from prsl.losses import hf_loss, prsl_loss, prsl_terms


def test_shift_follows_the_model_family():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 30, generator=gen)
    labels = torch.randint(0, 30, (2, 6), generator=gen)
    labels[0, :2] = -100
    loss_fn = hf_loss("prsl", k=4, weight=0.1)
    causal = loss_fn(CausalLMOutput(logits=logits), labels)
    torch.testing.assert_close(causal, prsl_loss(logits[:, :-1], labels[:, 1:], k=4, weight=0.1))
    seq2seq = loss_fn(Seq2SeqLMOutput(logits=logits, encoder_last_hidden_state=logits), labels)
    torch.testing.assert_close(seq2seq, prsl_loss(logits, labels, k=4, weight=0.1))
    forced = hf_loss("prsl", shift=False, k=4, weight=0.1)(CausalLMOutput(logits=logits), labels)
    torch.testing.assert_close(forced, seq2seq)


def test_num_items_in_batch_rescales_only_the_ce_part():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 20, generator=gen)
    labels = torch.randint(0, 20, (2, 5), generator=gen)
    out = Seq2SeqLMOutput(logits=logits, encoder_last_hidden_state=logits)
    plain = hf_loss("prsl", k=3, weight=0.2)
    whole = plain(out, labels)
    doubled = plain(out, labels, num_items_in_batch=torch.tensor(20))
    terms = prsl_terms(logits, labels, k=3, weight=0.2)

    torch.testing.assert_close(whole, terms.loss)
    torch.testing.assert_close(doubled, terms.ce * 10 / 20 + 0.2 * terms.regularizer)


def test_num_items_in_batch_rescales_all_of_label_smoothing():
    # Label-smoothed CE is a per-token mean as a whole: Trainer's contract is its token sum over
    # num_items_in_batch, the smoothing part included.
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 20, generator=gen)
    labels = torch.randint(0, 20, (2, 5), generator=gen)
    labels[0, :2] = -100
    out = Seq2SeqLMOutput(logits=logits, encoder_last_hidden_state=logits)
    got = hf_loss("ls", smoothing=0.2)(out, labels, num_items_in_batch=torch.tensor(32))
    token_sum = torch.nn.functional.cross_entropy(
        logits.reshape(-1, 20), labels.reshape(-1), label_smoothing=0.2, reduction="sum"
    )
    torch.testing.assert_close(got, token_sum / 32)


class TokenDataset(torch.utils.data.Dataset):
    def __init__(self, n: int, length: int, vocab: int) -> None:
        gen = torch.Generator().manual_seed(2)
        self.ids = torch.randint(0, vocab, (n, length), generator=gen)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i].clone()}


def test_trainer_trains_with_compute_loss_func(tmp_path):
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=50,
        n_positions=16,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=0,
        eos_token_id=1,
    )
    model = GPT2LMHeadModel(config)
    data = TokenDataset(n=8, length=10, vocab=50)
    calls = []
    inner = hf_loss("prsl", k=4, weight=1e-2)

    def spy(outputs, labels, num_items_in_batch=None):
        loss = inner(outputs, labels, num_items_in_batch=num_items_in_batch)
        # Trainer's contract: token losses summed and divided by its own count of label tokens.
        terms = prsl_terms(outputs.logits[:, :-1], labels[:, 1:], k=4, weight=1e-2)
        ce_sum = terms.ce * (labels[:, 1:] != -100).sum()
        want = ce_sum / num_items_in_batch + 1e-2 * terms.regularizer
        calls.append((loss.detach(), want.detach()))
        return loss

    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=6,
        learning_rate=5e-3,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, compute_loss_func=spy)
    trainer.train()
    assert len(calls) == 6
    for got, want in calls:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < losses[0]
