"""The demo world's concepts: what each one sounds like, looks like, looks like to a depth camera, and is
called in four languages.

Every concept differs from the others along several axes at once (pitch, spectral tilt, noise colour and
band, rhythm, modulation for sound; hue and shape for pictures; shape, distance and relief for depth), so
a model has to combine cues rather than read the class from one frequency bin or one pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LANGUAGES: tuple[str, ...] = ("en", "pt", "de", "ru")
"""Caption languages of the world: English plus two Latin-script languages and one Cyrillic one."""


@dataclass(frozen=True)
class SoundSignature:
    """Parameters of the generic synthesiser in :mod:`modbind.demo.sound` for one concept."""

    f0: float = 0.0
    """Fundamental frequency in Hz of the tonal part; 0 means no tonal part."""
    partials: int = 1
    """Number of harmonics of the tonal part."""
    tilt: float = 1.0
    """Spectral tilt: partial k has amplitude k**-tilt."""
    inharmonicity: float = 0.0
    """Stretch of partial ratios (bells): ratio_k = k * (1 + inharmonicity * (k - 1))."""
    noise_mix: float = 0.0
    """Share of the noise part in the mix (0 = pure tone, 1 = pure noise)."""
    noise_colour: float = 0.0
    """Power-law exponent of the noise spectrum: 0 white, 1 pink, 2 brown."""
    noise_band: tuple[float, float] = (50.0, 7900.0)
    """Pass band of the noise part in Hz."""
    event_rate: float = 0.0
    """Events per second; 0 means one continuous sound."""
    event_length: float = 0.2
    """Seconds each event lasts."""
    regular: bool = True
    """Regular rhythm (metronome with jitter) or random (Poisson) event times."""
    attack: float = 0.01
    """Seconds of the linear rise at each event onset."""
    decay: float = 0.1
    """Time constant in seconds of the exponential fall inside an event."""
    glide: float = 0.0
    """Pitch change in octaves over one event (chirps, meows, drum thumps)."""
    am_rate: float = 0.0
    """Amplitude-modulation rate in Hz."""
    am_depth: float = 0.0
    fm_rate: float = 0.0
    """Frequency-modulation (vibrato, siren sweep) rate in Hz."""
    fm_depth: float = 0.0
    """Relative frequency deviation of the FM (0.3 = ±30 %)."""
    melodic: bool = False
    """Each event plays a random major-scale step above ``f0`` (instruments) instead of one pitch."""


@dataclass(frozen=True)
class PictureSignature:
    """How a concept is drawn: a shape in a colour of its own."""

    hue: float
    """Hue in [0, 1)."""
    shape: str
    """One of the shapes :mod:`modbind.demo.picture` draws."""


@dataclass(frozen=True)
class DepthSignature:
    """How a concept looks to a depth camera: its picture's silhouette at its own distance, with its own relief."""

    distance: float
    """Typical distance from the camera in metres."""
    relief: str
    """One of the height profiles :mod:`modbind.demo.depth` draws (flat, dome, pyramid, ridges)."""


@dataclass(frozen=True)
class Words:
    """A concept's name in one language: the class label, the noun phrase and the verb phrase."""

    label: str
    noun: str
    verb: str


@dataclass(frozen=True)
class Concept:
    name: str
    sound: SoundSignature
    picture: PictureSignature
    depth: DepthSignature
    words: dict[str, Words] = field(default_factory=dict)


def _w(label: str, noun: str, verb: str) -> Words:
    return Words(label, noun, verb)


CONCEPTS: tuple[Concept, ...] = (
    Concept(
        "dog",
        SoundSignature(f0=420, partials=8, tilt=0.8, noise_mix=0.25, noise_colour=1.0, noise_band=(300, 3000),
                       event_rate=2.5, event_length=0.14, regular=False, decay=0.06, glide=-0.3),
        PictureSignature(0.00, "circle"), DepthSignature(1.0, "flat"),
        {"en": _w("dog", "a dog", "barks"), "pt": _w("cão", "um cão", "late"),
         "de": _w("Hund", "ein Hund", "bellt"), "ru": _w("собака", "собака", "лает")},
    ),
    Concept(
        "rain",
        SoundSignature(noise_mix=1.0, noise_colour=0.5, noise_band=(1500, 7000), event_rate=35, event_length=0.02,
                       regular=False, attack=0.001, decay=0.006, am_rate=0.0),
        PictureSignature(0.0625, "stripes"), DepthSignature(1.7, "dome"),
        {"en": _w("rain", "the rain", "falls"), "pt": _w("chuva", "a chuva", "cai"),
         "de": _w("Regen", "der Regen", "fällt"), "ru": _w("дождь", "дождь", "идёт")},
    ),
    Concept(
        "siren",
        SoundSignature(f0=850, partials=4, tilt=1.5, fm_rate=0.8, fm_depth=0.3),
        PictureSignature(0.125, "triangle"), DepthSignature(2.6, "pyramid"),
        {"en": _w("siren", "a siren", "wails"), "pt": _w("sirene", "uma sirene", "toca"),
         "de": _w("Sirene", "eine Sirene", "heult"), "ru": _w("сирена", "сирена", "воет")},
    ),
    Concept(
        "engine",
        SoundSignature(f0=55, partials=24, tilt=0.6, noise_mix=0.4, noise_colour=2.0, noise_band=(30, 800),
                       am_rate=28, am_depth=0.6),
        PictureSignature(0.1875, "square"), DepthSignature(3.8, "ridges"),
        {"en": _w("engine", "an engine", "rumbles"), "pt": _w("motor", "um motor", "ronca"),
         "de": _w("Motor", "ein Motor", "brummt"), "ru": _w("мотор", "мотор", "гудит")},
    ),
    Concept(
        "bell",
        SoundSignature(f0=660, partials=5, tilt=0.7, inharmonicity=0.35, event_rate=0.9, event_length=1.2,
                       decay=0.45),
        PictureSignature(0.25, "ring"), DepthSignature(1.0, "dome"),
        {"en": _w("bell", "a bell", "rings"), "pt": _w("sino", "um sino", "badala"),
         "de": _w("Glocke", "eine Glocke", "läutet"), "ru": _w("колокол", "колокол", "звонит")},
    ),
    Concept(
        "bird",
        SoundSignature(f0=2600, partials=2, tilt=2.0, event_rate=7, event_length=0.07, regular=False,
                       decay=0.05, glide=0.7),
        PictureSignature(0.3125, "diamond"), DepthSignature(1.7, "pyramid"),
        {"en": _w("bird", "a bird", "sings"), "pt": _w("pássaro", "um pássaro", "canta"),
         "de": _w("Vogel", "ein Vogel", "singt"), "ru": _w("птица", "птица", "поёт")},
    ),
    Concept(
        "clock",
        SoundSignature(noise_mix=1.0, noise_colour=0.0, noise_band=(2500, 5000), event_rate=2.0, event_length=0.015,
                       attack=0.0005, decay=0.004),
        PictureSignature(0.375, "cross"), DepthSignature(2.6, "ridges"),
        {"en": _w("clock", "a clock", "ticks"), "pt": _w("relógio", "um relógio", "faz tique-taque"),
         "de": _w("Uhr", "eine Uhr", "tickt"), "ru": _w("часы", "часы", "тикают")},
    ),
    Concept(
        "drum",
        SoundSignature(f0=140, partials=3, tilt=1.2, noise_mix=0.2, noise_colour=1.0, noise_band=(60, 600),
                       event_rate=3.0, event_length=0.25, attack=0.002, decay=0.08, glide=-1.0),
        PictureSignature(0.4375, "frame"), DepthSignature(3.8, "flat"),
        {"en": _w("drum", "a drum", "beats"), "pt": _w("tambor", "um tambor", "rufa"),
         "de": _w("Trommel", "eine Trommel", "dröhnt"), "ru": _w("барабан", "барабан", "бьёт")},
    ),
    Concept(
        "wind",
        SoundSignature(noise_mix=1.0, noise_colour=1.5, noise_band=(150, 1200), am_rate=0.4, am_depth=0.7),
        PictureSignature(0.5, "wave"), DepthSignature(1.0, "pyramid"),
        {"en": _w("wind", "the wind", "blows"), "pt": _w("vento", "o vento", "sopra"),
         "de": _w("Wind", "der Wind", "weht"), "ru": _w("ветер", "ветер", "дует")},
    ),
    Concept(
        "thunder",
        SoundSignature(noise_mix=1.0, noise_colour=2.0, noise_band=(30, 250), event_rate=0.6, event_length=1.6,
                       regular=False, attack=0.05, decay=0.6),
        PictureSignature(0.5625, "bolt"), DepthSignature(1.7, "ridges"),
        {"en": _w("thunder", "the thunder", "rolls"), "pt": _w("trovão", "o trovão", "ribomba"),
         "de": _w("Donner", "der Donner", "grollt"), "ru": _w("гром", "гром", "гремит")},
    ),
    Concept(
        "cat",
        SoundSignature(f0=520, partials=6, tilt=1.0, event_rate=1.1, event_length=0.6, attack=0.08, decay=0.5,
                       glide=0.6, fm_rate=5, fm_depth=0.02),
        PictureSignature(0.625, "triangle_down"), DepthSignature(2.6, "flat"),
        {"en": _w("cat", "a cat", "meows"), "pt": _w("gato", "um gato", "mia"),
         "de": _w("Katze", "eine Katze", "miaut"), "ru": _w("кошка", "кошка", "мяукает")},
    ),
    Concept(
        "horn",
        SoundSignature(f0=400, partials=10, tilt=0.4, event_rate=1.4, event_length=0.45, attack=0.01, decay=2.0),
        PictureSignature(0.6875, "bar"), DepthSignature(3.8, "dome"),
        {"en": _w("horn", "a car horn", "honks"), "pt": _w("buzina", "uma buzina", "buzina"),
         "de": _w("Hupe", "eine Hupe", "hupt"), "ru": _w("гудок", "гудок", "сигналит")},
    ),
    Concept(
        "stream",
        SoundSignature(noise_mix=1.0, noise_colour=0.8, noise_band=(400, 1600), am_rate=6, am_depth=0.35),
        PictureSignature(0.75, "dots"), DepthSignature(1.0, "ridges"),
        {"en": _w("stream", "a stream", "flows"), "pt": _w("riacho", "um riacho", "corre"),
         "de": _w("Bach", "ein Bach", "plätschert"), "ru": _w("ручей", "ручей", "журчит")},
    ),
    Concept(
        "frog",
        SoundSignature(f0=110, partials=12, tilt=0.5, event_rate=2.0, event_length=0.3, attack=0.01, decay=0.3,
                       am_rate=32, am_depth=0.9, regular=False),
        PictureSignature(0.8125, "half_disc"), DepthSignature(1.7, "flat"),
        {"en": _w("frog", "a frog", "croaks"), "pt": _w("sapo", "um sapo", "coaxa"),
         "de": _w("Frosch", "ein Frosch", "quakt"), "ru": _w("лягушка", "лягушка", "квакает")},
    ),
    Concept(
        "piano",
        SoundSignature(f0=300, partials=7, tilt=1.1, inharmonicity=0.002, event_rate=3.2, event_length=0.5,
                       attack=0.003, decay=0.25, regular=False, melodic=True),
        PictureSignature(0.875, "keys"), DepthSignature(2.6, "dome"),
        {"en": _w("piano", "a piano", "plays"), "pt": _w("piano", "um piano", "toca"),
         "de": _w("Klavier", "ein Klavier", "spielt"), "ru": _w("пианино", "пианино", "играет")},
    ),
    Concept(
        "whistle",
        SoundSignature(f0=1900, partials=1, fm_rate=6, fm_depth=0.03, noise_mix=0.1, noise_band=(1500, 2500),
                       event_rate=0.7, event_length=1.0, attack=0.05, decay=3.0),
        PictureSignature(0.9375, "star"), DepthSignature(3.8, "pyramid"),
        {"en": _w("whistle", "a whistle", "blows"), "pt": _w("apito", "um apito", "apita"),
         "de": _w("Pfeife", "eine Pfeife", "pfeift"), "ru": _w("свисток", "свисток", "свистит")},
    ),
)
"""The 16 concepts, in a fixed order (their index is their class id)."""


def concept_names() -> list[str]:
    return [c.name for c in CONCEPTS]
