PART=from cat
