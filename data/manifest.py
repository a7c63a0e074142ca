"""The manifest row, the contract between data preparation and training (ARCHITECTURE.md)."""

# name -> accepted JSON types of every field of a row (bool, a subclass of int, is never accepted).
FIELDS = {
    "id": (str,),
    "subset": (str,),
    "duration": (int, float),
    "frames": (int,),
    "transcript": (str,),
    "audio": (str,),
    "features": (str,),
    "offset": (int,),
}
