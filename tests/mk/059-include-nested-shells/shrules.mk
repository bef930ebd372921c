fromsh:V:
	echo "sh: one word"
