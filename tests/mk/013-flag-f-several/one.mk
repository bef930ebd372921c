MKSHELL=rc
X=from one
first:V: second
	echo first $X
