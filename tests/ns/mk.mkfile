all:V: bound nested private
	ls $T/work

bound:V:
	rc -c 'bind $T/a $T/work; cat $T/work/x'

nested:V: bound
	rc $T/nested.rc

private:V: nested
	rc -c 'rfork n; bind $T/c $T/work; ls $T/work; echo private done'
