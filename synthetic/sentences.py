"""Sentences for the synthetic corpus: a small template grammar over a few hundred common words.

Every sentence belongs to exactly one pool, decided by a hash of its text alone (not of the seed),
so a dev or test sentence can never occur in train, whatever seeds or counts are asked for.
Transcripts hold only the 28 non-blank labels: A-Z, apostrophe and space, upper case.
"""

import hashlib
import random

POOLS = ("train", "dev", "test")
_SUBSET_PREFIXES = {"train-": "train", "dev-": "dev", "test-": "test"}

# --- the vocabulary ---------------------------------------------------------------------------
# (singular, plural) so agreement never needs spelling rules
NOUNS = [
    tuple(pair.split("/")) if "/" in pair else (pair, pair + "S")
    for pair in """
    CAT DOG BIRD HORSE COW PIG SHEEP/SHEEP GOAT DUCK FOX/FOXES WOLF/WOLVES BEAR RABBIT MOUSE/MICE FISH/FISH
    FROG SNAKE LION TIGER MONKEY BOY GIRL MAN/MEN WOMAN/WOMEN CHILD/CHILDREN FRIEND TEACHER DOCTOR FARMER
    SOLDIER KING QUEEN PRINCE SAILOR DRIVER BAKER NURSE STUDENT NEIGHBOUR STRANGER BROTHER SISTER MOTHER
    FATHER UNCLE AUNT BABY/BABIES LADY/LADIES GUARD BOOK LETTER PEN CUP PLATE BOTTLE BOX/BOXES BAG CHAIR
    TABLE BED DOOR WINDOW LAMP CLOCK KEY COAT HAT SHOE SHIRT DRESS/DRESSES RING BELL BALL TOY KNIFE/KNIVES
    SPOON BASKET BLANKET PICTURE MAP TICKET COIN STONE ROCK STICK ROPE BOAT SHIP CAR TRUCK TRAIN BUS/BUSES
    BICYCLE WAGON APPLE ORANGE LEMON CAKE BREAD/BREADS EGG CHEESE/CHEESES FLOWER TREE LEAF/LEAVES SEED
    HOUSE CASTLE TOWER BRIDGE ROAD STREET GARDEN FARM FIELD FOREST RIVER LAKE HILL MOUNTAIN ISLAND BEACH/BEACHES
    VILLAGE CITY/CITIES MARKET SHOP SCHOOL CHURCH/CHURCHES STATION LIBRARY/LIBRARIES KITCHEN ROOM WALL
    FENCE GATE CORNER STAR CLOUD STORM SONG STORY/STORIES GAME PARTY/PARTIES
    """.split()
]
PLACES = """RIVER LAKE HILL MOUNTAIN FOREST GARDEN FIELD BRIDGE ROAD STREET STATION MARKET SCHOOL CHURCH
    LIBRARY KITCHEN VILLAGE CITY BEACH ISLAND CASTLE TOWER FARM HOUSE WINDOW DOOR TABLE BED WALL FENCE
    GATE CORNER SHOP""".split()
ADJECTIVES = """RED BLUE GREEN YELLOW BLACK WHITE BROWN GREY PINK PURPLE BIG SMALL LITTLE TALL SHORT LONG
    OLD NEW YOUNG HAPPY SAD ANGRY TIRED HUNGRY BRAVE QUIET LOUD KIND GENTLE CLEVER SILLY LAZY BUSY
    FRIENDLY LONELY HONEST PROUD SHY STRONG WEAK FAST SLOW HEAVY LIGHT WARM COLD HOT WET DRY CLEAN DIRTY
    EMPTY FULL BRIGHT DARK SOFT HARD ROUND SHARP SWEET SOUR FRESH RICH POOR CHEAP STRANGE FAMOUS SECRET
    GOLDEN WOODEN BROKEN HEAVY PRETTY UGLY WILD CALM FUNNY LUCKY GOOD BAD GREAT TINY HUGE""".split()
ADJECTIVES = list(dict.fromkeys(ADJECTIVES))
# (base, past) of transitive verbs
VERBS = [
    tuple(pair.split("/"))
    for pair in """
    SEE/SAW FIND/FOUND TAKE/TOOK BRING/BROUGHT BUY/BOUGHT SELL/SOLD HOLD/HELD CATCH/CAUGHT THROW/THREW
    CARRY/CARRIED PUSH/PUSHED PULL/PULLED WATCH/WATCHED HELP/HELPED FOLLOW/FOLLOWED CALL/CALLED
    VISIT/VISITED PAINT/PAINTED WASH/WASHED CLEAN/CLEANED FIX/FIXED BREAK/BROKE BUILD/BUILT DRAW/DREW
    CHASE/CHASED FEED/FED MEET/MET LEAVE/LEFT KEEP/KEPT LOSE/LOST HIDE/HID SEND/SENT READ/READ
    WRITE/WROTE OPEN/OPENED CLOSE/CLOSED LIKE/LIKED LOVE/LOVED HATE/HATED WANT/WANTED NEED/NEEDED
    MOVE/MOVED DROP/DROPPED KICK/KICKED LIFT/LIFTED COUNT/COUNTED CHECK/CHECKED COOK/COOKED EAT/ATE
    MAKE/MADE FILL/FILLED PICK/PICKED SHOW/SHOWED GIVE/GAVE STEAL/STOLE WAKE/WOKE TOUCH/TOUCHED
    """.split()
]
# (base, past) of intransitive verbs of motion, followed by a place
MOTIONS = [
    tuple(pair.split("/"))
    for pair in """WALK/WALKED RUN/RAN GO/WENT DRIVE/DROVE SWIM/SWAM JUMP/JUMPED RIDE/RODE HURRY/HURRIED
    CLIMB/CLIMBED""".split()
]
NAMES = """JOHN MARY PETER ANNA JAMES SARAH DAVID EMMA THOMAS ALICE GEORGE LUCY HENRY KATE ROBERT JANE
    WILLIAM RUTH EDWARD HELEN ARTHUR GRACE FRANK ROSE CHARLES MARTHA SAM NORA PAUL CLARA OLIVER MAGGIE
    TOM LILY JACK EVA MAX DORA BEN SOPHIE""".split()
NUMBERS = "TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE TWENTY".split()
DETERMINERS = "THE A THIS THAT MY YOUR HIS HER OUR THEIR".split()
PLURAL_DETERMINERS = "THE THESE THOSE MY YOUR HIS HER OUR THEIR SOME MANY".split()
PREPOSITIONS = "NEAR BY BEHIND UNDER OVER INTO ACROSS AROUND BESIDE TOWARDS PAST INSIDE OUTSIDE".split()
TO_PREPOSITIONS = "TO TOWARDS INTO ACROSS AROUND PAST NEAR BEHIND".split()
ADVERBS = """QUICKLY SLOWLY QUIETLY LOUDLY CAREFULLY SUDDENLY GENTLY HAPPILY SADLY BRAVELY EASILY
    PROUDLY CALMLY BADLY""".split()
DEGREES = "VERY QUITE REALLY RATHER TOO SO".split()
TIMES = """TODAY TOMORROW YESTERDAY TONIGHT AGAIN EARLY LATE SOON NOW""".split()
DAYS = "MONDAY TUESDAY WEDNESDAY THURSDAY FRIDAY SATURDAY SUNDAY MORNING EVENING".split()
PRONOUNS = "I YOU WE THEY".split()  # plural-agreeing subjects
NEGATIVES = "DIDN'T CAN'T WON'T COULDN'T WOULDN'T SHOULDN'T".split()
MODALS = "WILL CAN MUST MIGHT SHOULD COULD WOULD".split()
QUESTION_WORDS = "WHERE WHY WHEN HOW".split()
THINK = "THINK KNOW SAID HEARD BELIEVE FEEL".split()

MIN_WORDS, MAX_WORDS = 5, 9  # about 1.5-3.5 s of espeak-ng speech at 135-195 words a minute


# --- the grammar: each function draws one phrase as a list of words ---------------------------
def _maybe(rng: random.Random, p: float, words: list[str]) -> list[str]:
    return words if rng.random() < p else []


def _singular_np(rng: random.Random) -> list[str]:
    roll = rng.random()
    if roll < 0.15:
        return [rng.choice(NAMES)]
    if roll < 0.25:
        return [rng.choice(NAMES) + "'S", rng.choice(NOUNS)[0]]
    return [rng.choice(DETERMINERS)] + _maybe(rng, 0.5, [rng.choice(ADJECTIVES)]) + [rng.choice(NOUNS)[0]]


def _plural_np(rng: random.Random) -> list[str]:
    first = rng.choice(NUMBERS) if rng.random() < 0.6 else rng.choice(PLURAL_DETERMINERS)
    return [first] + _maybe(rng, 0.5, [rng.choice(ADJECTIVES)]) + [rng.choice(NOUNS)[1]]


def _object_np(rng: random.Random) -> list[str]:
    return _plural_np(rng) if rng.random() < 0.35 else _singular_np(rng)


def _subject(rng: random.Random) -> list[str]:
    return [rng.choice(PRONOUNS + ["HE", "SHE"])] if rng.random() < 0.15 else _singular_np(rng)


def _place(rng: random.Random) -> list[str]:
    return ["THE", rng.choice(PLACES)]


def _time(rng: random.Random) -> list[str]:
    return ["ON", rng.choice(DAYS)] if rng.random() < 0.3 else [rng.choice(TIMES)]


def _adjective_phrase(rng: random.Random) -> list[str]:
    return _maybe(rng, 0.4, [rng.choice(DEGREES)]) + [rng.choice(ADJECTIVES)]


def _past_action(rng: random.Random) -> list[str]:
    """THE RED CAT SAW TWO OLD DOGS NEAR THE RIVER"""
    words = _subject(rng) + [rng.choice(VERBS)[1]] + _object_np(rng)
    return words + _maybe(rng, 0.5, [rng.choice(PREPOSITIONS)] + _place(rng))


def _future_action(rng: random.Random) -> list[str]:
    """MY SISTER WILL BUY A NEW COAT TOMORROW"""
    return _subject(rng) + [rng.choice(MODALS), rng.choice(VERBS)[0]] + _object_np(rng) + _maybe(rng, 0.5, _time(rng))


def _negative(rng: random.Random) -> list[str]:
    """JOHN DIDN'T FIND HIS KEY"""
    return _subject(rng) + [rng.choice(NEGATIVES), rng.choice(VERBS)[0]] + _object_np(rng)


def _description(rng: random.Random) -> list[str]:
    """MARY'S HOUSE IS VERY SMALL"""
    subject = _singular_np(rng)
    tense = rng.choice(["IS", "WAS", "ISN'T", "WASN'T", "LOOKS", "SEEMED"])
    return subject + [tense] + _adjective_phrase(rng) + _maybe(rng, 0.3, _time(rng))


def _plural_description(rng: random.Random) -> list[str]:
    """THESE GREEN APPLES ARE SWEET"""
    return _plural_np(rng) + [rng.choice(["ARE", "WERE", "AREN'T", "WEREN'T"])] + _adjective_phrase(rng)


def _there_are(rng: random.Random) -> list[str]:
    """THERE ARE SEVEN GREEN BOOKS ON THE TABLE"""
    head = ["THERE", rng.choice(["ARE", "WERE"])] + _plural_np(rng)
    return head + [rng.choice(["ON", "IN", "NEAR", "UNDER", "BEHIND"])] + _place(rng)


def _motion(rng: random.Random) -> list[str]:
    """THE OLD MAN WALKED SLOWLY TO THE STATION"""
    words = _subject(rng) + [rng.choice(MOTIONS)[1]] + _maybe(rng, 0.4, [rng.choice(ADVERBS)])
    return words + [rng.choice(TO_PREPOSITIONS)] + _place(rng)


def _question(rng: random.Random) -> list[str]:
    """WHY DID THE BAKER SELL HIS BICYCLE"""
    aux = rng.choice(["DID", "CAN", "WILL", "SHOULD", "COULD"])
    return [rng.choice(QUESTION_WORDS), aux] + _subject(rng) + [rng.choice(VERBS)[0]] + _object_np(rng)


def _reported(rng: random.Random) -> list[str]:
    """I THINK THAT THE DOG IS HUNGRY"""
    return [rng.choice(PRONOUNS), rng.choice(THINK), "THAT"] + _singular_np(rng) + ["IS"] + _adjective_phrase(rng)


TEMPLATES = (
    (_past_action, 4),
    (_future_action, 2),
    (_negative, 2),
    (_description, 2),
    (_plural_description, 1),
    (_there_are, 1),
    (_motion, 2),
    (_question, 2),
    (_reported, 1),
)
_FUNCTIONS = [f for f, _ in TEMPLATES]
_WEIGHTS = [w for _, w in TEMPLATES]


def draw(rng: random.Random) -> str:
    """One sentence of MIN_WORDS..MAX_WORDS words, from any pool."""
    while True:
        words = rng.choices(_FUNCTIONS, _WEIGHTS)[0](rng)
        if MIN_WORDS <= len(words) <= MAX_WORDS:
            return " ".join(words)


def pool_of(sentence: str) -> str:
    """The pool a sentence belongs to: a fixed hash of its text, 90% train, 5% dev, 5% test."""
    bucket = int.from_bytes(hashlib.blake2b(sentence.encode(), digest_size=8, person=b"ds2-split").digest(), "big") % 20
    return "dev" if bucket == 0 else "test" if bucket == 1 else "train"


def pool_for_subset(subset: str) -> str:
    """LibriSpeech subset name -> sentence pool: train-* -> train, dev-* -> dev, test-* -> test."""
    for prefix, pool in _SUBSET_PREFIXES.items():
        if subset.startswith(prefix):
            return pool
    raise ValueError(f"subset {subset!r}: its name must start with one of {', '.join(_SUBSET_PREFIXES)}")


def sentences(pool: str, count: int, seed: int) -> list[str]:
    """`count` distinct sentences of `pool`, deterministic for (pool, count, seed).

    A shorter list is a prefix of a longer one with the same seed, so callers can slice one draw.
    """
    if pool not in POOLS:
        raise ValueError(f"pool {pool!r}: must be one of {', '.join(POOLS)}")
    if count < 0:
        raise ValueError(f"count {count}: must be >= 0")
    rng = random.Random(f"sentences:{pool}:{seed}")
    chosen: dict[str, None] = {}
    budget = 100 * count + 10_000  # the grammar holds millions; running out means a broken grammar
    for _ in range(budget):
        if len(chosen) == count:
            break
        sentence = draw(rng)
        if pool_of(sentence) == pool:
            chosen.setdefault(sentence)
    if len(chosen) < count:
        raise ValueError(f"only {len(chosen)} distinct {pool} sentences found after {budget} draws; asked for {count}")
    return list(chosen)
