"""Reference SASRec trained with full cross-entropy, on a recdistill prepared dataset.

The model is pmixer/SASRec.pytorch's python/model.py as written (post-LN unless --norm-first, torch
MultiheadAttention, Conv1d point-wise feed-forward, Xavier-normal init with padding rows zeroed, positions
1..maxlen over the left-padded window, only future keys masked). Training follows its main.py (Adam
betas 0.9/0.98, batch 128, maxlen 200, one window per user: the last maxlen training steps) with the
one-negative BCE replaced by cross-entropy over all items. Evaluation is recdistill's: time-ordered
leave-one-out, full ranking over items 1..N with the user's history excluded, pessimistic ties; the
checkpoint is chosen on validation NDCG@10, evaluated every epoch.

Input: a `data:prepare --out DIR` folder (dataset.json, users.jsonl, items.jsonl), so both projects train
on the same sequences. Needs python3 and torch (Debian: apt-get install python3-torch).

  python3 tools/reference-sasrec/sasrec_ce.py --data DIR --seed 1 [--epochs 200] [--json]
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch


class PointWiseFeedForward(torch.nn.Module):
    def __init__(self, hidden_units, dropout_rate):
        super().__init__()
        self.conv1 = torch.nn.Conv1d(hidden_units, hidden_units, kernel_size=1)
        self.dropout1 = torch.nn.Dropout(p=dropout_rate)
        self.relu = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv1d(hidden_units, hidden_units, kernel_size=1)
        self.dropout2 = torch.nn.Dropout(p=dropout_rate)

    def forward(self, inputs):
        outputs = self.dropout2(self.conv2(self.relu(self.dropout1(self.conv1(inputs.transpose(-1, -2))))))
        return outputs.transpose(-1, -2)


class SASRec(torch.nn.Module):
    def __init__(self, item_num, args):
        super().__init__()
        self.item_num = item_num
        self.norm_first = args.norm_first
        self.item_emb = torch.nn.Embedding(item_num + 1, args.hidden_units, padding_idx=0)
        self.pos_emb = torch.nn.Embedding(args.maxlen + 1, args.hidden_units, padding_idx=0)
        self.emb_dropout = torch.nn.Dropout(p=args.dropout_rate)
        self.attention_layernorms = torch.nn.ModuleList()
        self.attention_layers = torch.nn.ModuleList()
        self.forward_layernorms = torch.nn.ModuleList()
        self.forward_layers = torch.nn.ModuleList()
        self.last_layernorm = torch.nn.LayerNorm(args.hidden_units, eps=1e-8)
        for _ in range(args.num_blocks):
            self.attention_layernorms.append(torch.nn.LayerNorm(args.hidden_units, eps=1e-8))
            self.attention_layers.append(torch.nn.MultiheadAttention(args.hidden_units, args.num_heads, args.dropout_rate))
            self.forward_layernorms.append(torch.nn.LayerNorm(args.hidden_units, eps=1e-8))
            self.forward_layers.append(PointWiseFeedForward(args.hidden_units, args.dropout_rate))

    def log2feats(self, log_seqs):
        seqs = self.item_emb(log_seqs)
        seqs = seqs * self.item_emb.embedding_dim ** 0.5
        poss = torch.arange(1, log_seqs.shape[1] + 1).unsqueeze(0).repeat(log_seqs.shape[0], 1)
        poss = poss * (log_seqs != 0)
        seqs = seqs + self.pos_emb(poss)
        seqs = self.emb_dropout(seqs)
        tl = seqs.shape[1]
        attention_mask = ~torch.tril(torch.ones((tl, tl), dtype=torch.bool))
        for i in range(len(self.attention_layers)):
            seqs = torch.transpose(seqs, 0, 1)
            if self.norm_first:
                x = self.attention_layernorms[i](seqs)
                mha_outputs, _ = self.attention_layers[i](x, x, x, attn_mask=attention_mask)
                seqs = seqs + mha_outputs
                seqs = torch.transpose(seqs, 0, 1)
                seqs = seqs + self.forward_layers[i](self.forward_layernorms[i](seqs))
            else:
                mha_outputs, _ = self.attention_layers[i](seqs, seqs, seqs, attn_mask=attention_mask)
                seqs = self.attention_layernorms[i](seqs + mha_outputs)
                seqs = torch.transpose(seqs, 0, 1)
                seqs = self.forward_layernorms[i](seqs + self.forward_layers[i](seqs))
        return self.last_layernorm(seqs)

    def all_logits(self, feats):
        logits = feats.matmul(self.item_emb.weight.t())
        logits[..., 0] = -math.inf  # column 0 is padding, never a candidate
        return logits


def load_prepared(folder):
    with open(os.path.join(folder, 'dataset.json')) as f:
        meta = json.load(f)
    if meta.get('format') != 'recdistill-prepared-v1':
        sys.exit(f'{folder}/dataset.json: format {meta.get("format")!r}, expected recdistill-prepared-v1 (a data:prepare --out folder)')
    users = []
    with open(os.path.join(folder, 'users.jsonl')) as f:
        for line_no, line in enumerate(f, 1):
            row = json.loads(line)
            if row['id'] != line_no - 1:
                sys.exit(f'{folder}/users.jsonl line {line_no}: id {row["id"]}, expected {line_no - 1}')
            users.append(row['items'])
    n_items = 0
    with open(os.path.join(folder, 'items.jsonl')) as f:
        for line in f:
            n_items = max(n_items, json.loads(line)['id'])
    return meta, users, n_items


def left_pad(seq, maxlen):
    out = np.zeros(maxlen, dtype=np.int64)
    tail = seq[-maxlen:]
    if tail:
        out[maxlen - len(tail):] = tail
    return out


def evaluate(model, users, n_items, split, maxlen, batch=256):
    """NDCG@10 and HR@10, full ranking, history excluded, pessimistic ties (recdistill's metrics.ts)."""
    model.eval()
    rows, targets, excluded = [], [], []
    for items in users:
        if len(items) < 3:
            continue
        hist = items[:-2] if split == 'valid' else items[:-1]
        target = items[-2] if split == 'valid' else items[-1]
        rows.append(left_pad(hist, maxlen))
        targets.append(target)
        excluded.append(hist)
    ndcg = hr = 0.0
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            seqs = torch.from_numpy(np.stack(rows[start:start + batch]))
            scores = model.all_logits(model.log2feats(seqs)[:, -1, :]).numpy()
            for b in range(scores.shape[0]):
                s = scores[b]
                t = targets[start + b]
                mask = np.ones(n_items + 1, dtype=bool)
                mask[0] = False
                mask[excluded[start + b]] = False
                mask[t] = False
                rank = int(np.sum(s[mask] >= s[t]))
                if rank < 10:
                    hr += 1.0
                    ndcg += 1.0 / math.log2(rank + 2)
    model.train()
    return ndcg / len(rows), hr / len(rows)


def popularity(users, n_items, split):
    counts = np.zeros(n_items + 1, dtype=np.float64)
    for items in users:
        hist = items if len(items) < 3 else (items[:-2] if split == 'valid' else items[:-1])
        np.add.at(counts, hist, 1)
    ndcg = hr = 0.0
    n = 0
    for items in users:
        if len(items) < 3:
            continue
        hist = items[:-2] if split == 'valid' else items[:-1]
        t = items[-2] if split == 'valid' else items[-1]
        mask = np.ones(n_items + 1, dtype=bool)
        mask[0] = False
        mask[hist] = False
        mask[t] = False
        rank = int(np.sum(counts[mask] >= counts[t]))
        n += 1
        if rank < 10:
            hr += 1.0
            ndcg += 1.0 / math.log2(rank + 2)
    return ndcg / n, hr / n


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True, help='a data:prepare --out folder')
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--epochs', type=int, default=200)
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--lr', type=float, default=0.001)
    p.add_argument('--maxlen', type=int, default=200)
    p.add_argument('--hidden-units', dest='hidden_units', type=int, default=50)
    p.add_argument('--num-blocks', dest='num_blocks', type=int, default=2)
    p.add_argument('--num-heads', dest='num_heads', type=int, default=1)
    p.add_argument('--dropout-rate', dest='dropout_rate', type=float, default=0.2)
    p.add_argument('--norm-first', dest='norm_first', action='store_true')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--popularity', action='store_true', help='only print the popularity baseline (checks the evaluation)')
    p.add_argument('--json', action='store_true', help='print one JSON summary as the last line')
    p.add_argument('--time-steps', dest='time_steps', type=int, default=0,
                   help='only time this many training steps (after 2 untimed ones) of the first epoch and print ms/step, steps/epoch and train s/epoch (for alternating speed comparisons with `npm run student:speed`)')
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    meta, users, n_items = load_prepared(args.data)
    if args.popularity:
        v, t = popularity(users, n_items, 'valid'), popularity(users, n_items, 'test')
        print(json.dumps({'fingerprint': meta['fingerprint'], 'valid': {'ndcg@10': v[0], 'hr@10': v[1]}, 'test': {'ndcg@10': t[0], 'hr@10': t[1]}}))
        return

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = SASRec(n_items, args)
    for _, param in model.named_parameters():
        try:
            torch.nn.init.xavier_normal_(param.data)
        except ValueError:
            pass  # 1-D parameters (biases, LayerNorm), as in main.py
    model.pos_emb.weight.data[0, :] = 0
    model.item_emb.weight.data[0, :] = 0
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98))

    train_users = [u for u, items in enumerate(users) if len(items) - (2 if len(items) >= 3 else 0) > 1]
    best = {'epoch': 0, 'valid': -1.0}
    best_state = None
    t0 = time.time()
    steps_per_epoch = (len(train_users) + args.batch_size - 1) // args.batch_size
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(train_users)
        total = 0.0
        t_train = time.time()
        for step, start in enumerate(range(0, len(order), args.batch_size)):
            if args.time_steps and step == 2:
                t_steps = time.time()
            if args.time_steps and step == 2 + args.time_steps:
                ms = (time.time() - t_steps) * 1000 / args.time_steps
                print(json.dumps({'msPerStep': ms, 'stepsPerEpoch': steps_per_epoch, 'trainSecondsPerEpoch': ms * steps_per_epoch / 1000}))
                return
            seqs, poss = [], []
            for u in order[start:start + args.batch_size]:
                items = users[u]
                train = items[:-2] if len(items) >= 3 else items
                seqs.append(left_pad(train[:-1], args.maxlen))
                poss.append(left_pad(train[1:], args.maxlen))
            seq_t = torch.from_numpy(np.stack(seqs))
            pos_t = torch.from_numpy(np.stack(poss))
            keep = pos_t != 0
            logits = model.all_logits(model.log2feats(seq_t)[keep])  # only the steps with a next item
            loss = torch.nn.functional.cross_entropy(logits, pos_t[keep])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        train_s = time.time() - t_train
        valid = evaluate(model, users, n_items, 'valid', args.maxlen)
        improved = valid[0] > best['valid']
        if improved:
            best = {'epoch': epoch, 'valid': valid[0], 'validHr': valid[1], 'secondsToBest': time.time() - t0}
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        print(f'epoch {epoch} loss {total:.3f} valid ndcg@10 {valid[0]:.4f} hr@10 {valid[1]:.4f}{" *" if improved else ""} ({time.time() - t0:.0f} s; epoch train {train_s:.1f} s)', flush=True)
    model.load_state_dict(best_state)
    test = evaluate(model, users, n_items, 'test', args.maxlen)
    summary = {
        'fingerprint': meta['fingerprint'], 'seed': args.seed, 'bestEpoch': best['epoch'],
        'valid': {'ndcg@10': best['valid'], 'hr@10': best['validHr']},
        'test': {'ndcg@10': test[0], 'hr@10': test[1]},
        'secondsToBest': best['secondsToBest'], 'seconds': time.time() - t0,
    }
    print(f'best epoch {best["epoch"]}: valid ndcg@10 {best["valid"]:.4f}, test ndcg@10 {test[0]:.4f} hr@10 {test[1]:.4f}')
    if args.json:
        print(json.dumps(summary))


if __name__ == '__main__':
    main()
