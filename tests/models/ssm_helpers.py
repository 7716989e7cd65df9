"""A download-free character tokenizer for the SSM model tests (40 ids: 4 specials + 36 characters)."""

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


def make_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {s: i for i, s in enumerate(["<pad>", "<s>", "</s>", "<unk>"] + list(CHARS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def save_tokenizer(path) -> None:
    make_tokenizer().save_pretrained(path)
